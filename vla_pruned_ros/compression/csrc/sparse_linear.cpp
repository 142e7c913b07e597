// Sparse linear layer for CPU: y = W_p x + b + A (B x), reading only the packed form of W_p.
//
// W_p is N:M (values (d_out, d_in/M*N) fp16/bf16/fp32 plus the little-endian bit stream of each
// value's position in its group, ceil(log2 M) bits each) or unstructured (values of the kept
// weights in row-major order, a 1-bit-per-weight mask and per-row offsets into the values).
// A (d_out, r) and B (r, d_in) are fp16/bf16/fp32 or int8 with one scale each.
//
// Few tokens (batch 1 is bound by the bytes read): for 2:4 each row is read once, straight from
// its values and index bytes: 8 values are widened at once and multiplied with the 8 inputs
// their indices name (two index bytes decoded into a lane permutation of 16 inputs), so no
// dense row is ever written. Other patterns widen a row into an L1 buffer and dot it.
// More tokens (set_tuning's limit, default above 1): blocked like a GEMM with the weight kept
// compact: the input columns are cut into blocks whose token panels (16 tokens) fit L1, each
// row of a group is decoded once per block into its kept values and column offsets (the A part
// is a block of its own over z = B x), and a register-blocked micro-kernel multiplies each kept
// value with 16 or 32 tokens at once from L1 (see many_tokens). No BLAS call inside the threads
// (MKL nested in at::parallel_for ran 10-20x slower on a loaded machine), and the dense weight
// of a layer never exists. Rows are spread over threads (at::parallel_for; the many-token path
// hands out row groups dynamically), which needs the build's -fopenmp (kernels.compile_flags).
// AVX2+FMA+F16C paths are compiled where the compiler targets them; a portable scalar path
// elsewhere (aarch64). A model run in bf16 (bf16 values and inputs) on a CPU with AMX-BF16
// takes AMX tiles from 4 tokens on (see tiled). Inputs are validated once (validate_nm,
// bitmask_row_offsets) and every call re-checks the shapes it relies on, so a malformed tensor
// raises instead of reading out of bounds.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define VPR_AVX2 1
#else
#define VPR_AVX2 0
#endif

namespace {

enum Kind { F32 = 0, F16 = 1, BF16 = 2, I8 = 3 };

Kind kind_of(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return F32;
    case torch::kFloat16: return F16;
    case torch::kBFloat16: return BF16;
    case torch::kInt8: return I8;
    default: TORCH_CHECK(false, "sparse_linear: unsupported dtype ", t.scalar_type());
  }
}

inline size_t elem_size(Kind k) { return k == F32 ? 4 : (k == I8 ? 1 : 2); }

// Element i of a stored array, as fp32.
template <Kind K>
inline float load1(const char* p, float scale, int64_t i) {
  if constexpr (K == F32) return reinterpret_cast<const float*>(p)[i];
  if constexpr (K == F16) return static_cast<float>(reinterpret_cast<const c10::Half*>(p)[i]);
  if constexpr (K == BF16) return static_cast<float>(reinterpret_cast<const c10::BFloat16*>(p)[i]);
  if constexpr (K == I8) return static_cast<float>(reinterpret_cast<const int8_t*>(p)[i]) * scale;
  return 0.f;
}

#if VPR_AVX2
// Elements i..i+8 of a stored array, as fp32.
template <Kind K>
inline __m256 load8(const char* p, float scale, int64_t i) {
  if constexpr (K == F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + i);
  if constexpr (K == F16)
    return _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(p) + i)));
  if constexpr (K == BF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(
            reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(p) + i))),
        16));
  if constexpr (K == I8)
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                             reinterpret_cast<const __m128i*>(p + i)))),
                         _mm256_set1_ps(scale));
  return _mm256_setzero_ps();
}

inline float hsum(__m256 acc) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}
#endif

// Dispatch a call templated on the storage kind.
template <class F>
inline auto by_kind(Kind k, F&& f) {
  switch (k) {
    case F16: return f(std::integral_constant<Kind, F16>{});
    case BF16: return f(std::integral_constant<Kind, BF16>{});
    case I8: return f(std::integral_constant<Kind, I8>{});
    default: return f(std::integral_constant<Kind, F32>{});
  }
}

// sum_i w[i] x[i] over n stored values, widened on the fly.
template <Kind K>
float dot_k(const char* w, float scale, const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#if VPR_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(load8<K>(w, scale, i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(load8<K>(w, scale, i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8<K>(w, scale, i), _mm256_loadu_ps(x + i), a0);
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) s += load1<K>(w, scale, i) * x[i];
  return s;
}

// Convert n stored values to fp32.
template <Kind K>
void widen_k(const char* src, float scale, int64_t n, float* dst) {
  int64_t i = 0;
  if constexpr (K == F32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
#if VPR_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8<K>(src, scale, i));
#endif
  for (; i < n; ++i) dst[i] = load1<K>(src, scale, i);
}

inline void widen(const char* src, Kind k, float scale, int64_t n, float* dst) {
  by_kind(k, [&](auto K) { widen_k<decltype(K)::value>(src, scale, n, dst); });
}

constexpr int64_t kMaxT = 4;  // tokens per pass over a row in the few-token path

// ---- rows of a (rows x cols) matrix -----------------------------------------------------------
// Each kind of row gives `expand(o, buf)`: row o as fp32 into buf[0..cols), and
// `dots(o, x, ldx, T, s, buf)`: s[t] = row o . x[t*ldx ..] for T <= kMaxT tokens (buf: scratch of
// cols + 8 floats).
struct DenseRows {
  const char* data;
  Kind kind;
  float scale;
  int64_t cols;
  const char* row(int64_t o) const { return data + o * cols * elem_size(kind); }
  void expand(int64_t o, float* buf) const { widen(row(o), kind, scale, cols, buf); }
  void dots(int64_t o, const float* x, int64_t ldx, int64_t T, float* s, float*) const {
    by_kind(kind, [&](auto K) {
      for (int64_t t = 0; t < T; ++t) s[t] = dot_k<decltype(K)::value>(row(o), scale, x + t * ldx, cols);
    });
  }
};

// 2:4 lookup for expand: for a byte of four 2-bit indices (two groups), the dense lane of each
// value; `bytes`, the same as a byte shuffle of the four 16-bit values (0x80: a zero byte), for
// expand16.
struct Table24 {
  int32_t perm[256][8];
  int32_t mask[256][8];
  uint8_t bytes[256][16];
  Table24() {
    for (int b = 0; b < 256; ++b) {
      for (int l = 0; l < 8; ++l) perm[b][l] = 0, mask[b][l] = 0;
      for (int i = 0; i < 16; ++i) bytes[b][i] = 0x80;
      for (int j = 0; j < 4; ++j) {
        int lane = ((b >> (2 * j)) & 3) + (j >= 2 ? 4 : 0);
        perm[b][lane] = j;
        mask[b][lane] = -1;
        bytes[b][2 * lane] = uint8_t(2 * j);
        bytes[b][2 * lane + 1] = uint8_t(2 * j + 1);
      }
    }
  }
};
const Table24& table24() {
  static const Table24 t;
  return t;
}

// 2:4 row dot, portable: group g's two indices are the nibble q0 + g of the stream.
template <Kind K>
void dots24_scalar(const char* v, const uint8_t* bits, int64_t q0, int64_t g0, int64_t cols,
                   const float* x, int64_t ldx, int64_t T, float* s) {
  for (int64_t g = g0, groups = cols / 4; g < groups; ++g) {
    const int64_t q = q0 + g;
    const unsigned nib = (bits[q >> 1] >> ((q & 1) * 4)) & 15;
    const float v0 = load1<K>(v, 1.f, 2 * g), v1 = load1<K>(v, 1.f, 2 * g + 1);
    const int64_t c0 = 4 * g + (nib & 3), c1 = 4 * g + (nib >> 2);
    for (int64_t t = 0; t < T; ++t) s[t] += v0 * x[t * ldx + c0] + v1 * x[t * ldx + c1];
  }
}

#if VPR_AVX2
// 2:4 row dot, AVX2: per 16 inputs, two index bytes (8 indices) become one permutation that
// picks, from the two 8-wide halves of the inputs, the input each of the 8 values multiplies.
// The row's index bytes start at p (byte-aligned row).
template <Kind K, int T>
void dots24_avx(const char* v, const uint8_t* p, int64_t cols, const float* x, int64_t ldx,
                float* s) {
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i three = _mm256_set1_epi32(3);
  const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4);
  __m256 acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  const int64_t chunks = cols / 16;
  auto step = [&](int64_t c, int u) {
    uint16_t w;
    std::memcpy(&w, p + 2 * c, 2);
    const __m256i idx = _mm256_add_epi32(
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w), shifts), three), base);
    const __m256 vals = load8<K>(v, 1.f, 8 * c);
    for (int t = 0; t < T; ++t) {
      const float* xt = x + t * ldx + 16 * c;
      const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xt), idx);
      const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xt + 8), idx);
      acc[t][u] = _mm256_fmadd_ps(vals, _mm256_blend_ps(lo, hi, 0xF0), acc[t][u]);
    }
  };
  int64_t c = 0;
  for (; c + 2 <= chunks; c += 2) {
    step(c, 0);
    step(c + 1, 1);
  }
  if (c < chunks) step(c, 0);
  for (int t = 0; t < T; ++t) s[t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
  dots24_scalar<K>(v, p, 0, chunks * 4, cols, x, ldx, T, s);
}
#endif

#if VPR_AVX2 && defined(__GNUC__) && defined(__x86_64__)
#define VPR_AVX512 1
// The same with AVX-512F, compiled for that target alone and taken only where the CPU has it
// (use_avx512): per 32 inputs, one 32-bit word of 16 indices becomes one two-table permutation
// of the 32 inputs, the word broadcast straight from memory. Half the shuffles per value of the
// AVX2 path, whose per-row dot was 3.4x its bytes-read roofline on a CPU with 19 GB/s.
#define VPR_T512 __attribute__((target("avx512f")))
template <Kind K>
VPR_T512 inline __m512 load16(const char* p, int64_t i) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p) + i;
  if constexpr (K == F32) return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + i);
  if constexpr (K == F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
  if constexpr (K == BF16)
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h))), 16));
  return _mm512_setzero_ps();
}

template <Kind K, int T>
VPR_T512 void dots24_avx512(const char* v, const uint8_t* p, int64_t cols, const float* x,
                            int64_t ldx, float* s) {
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
  const __m512i three = _mm512_set1_epi32(3);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28,
                                         28);
  __m512 acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  const int64_t chunks = cols / 32;
  int64_t c = 0;
  for (; c < chunks; ++c) {
    int32_t w;
    std::memcpy(&w, p + 4 * c, 4);
    const __m512i idx = _mm512_add_epi32(
        _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(w), shifts), three), base);
    const __m512 vals = load16<K>(v, 16 * c);
    for (int t = 0; t < T; ++t) {
      const float* xt = x + t * ldx + 32 * c;
      const __m512 picked =
          _mm512_permutex2var_ps(_mm512_loadu_ps(xt), idx, _mm512_loadu_ps(xt + 16));
      acc[t][c & 1] = _mm512_fmadd_ps(vals, picked, acc[t][c & 1]);
    }
  }
  for (int t = 0; t < T; ++t) s[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
  dots24_scalar<K>(v, p, 0, chunks * 8, cols, x, ldx, T, s);
}

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}
#else
#define VPR_AVX512 0
bool cpu_has_avx512() { return false; }
#endif
// Whether the 2:4 few-token dot takes the AVX-512 path (use_avx512; on where the CPU has it).
bool g_avx512 = cpu_has_avx512();

struct NMRows {
  const char* values;  // (rows, k) with k = cols / m * n
  Kind kind;
  const uint8_t* bits;  // ceil(rows * k * width / 8) bytes, validated
  int64_t nbytes, n, m, width, cols, k;

  const char* row(int64_t o) const { return values + o * k * elem_size(kind); }

  void dots(int64_t o, const float* x, int64_t ldx, int64_t T, float* s, float* buf) const {
    if (n == 2 && m == 4 && kind != I8) {
      const int64_t q0 = o * (cols / 4);  // nibble of the row's first group
      by_kind(kind, [&](auto K) {
        constexpr Kind KK = decltype(K)::value;
#if VPR_AVX2
        if (q0 % 2 == 0) {  // the row starts on an index byte: the vector dots (1-4 tokens)
          using Dot = void (*)(const char*, const uint8_t*, int64_t, const float*, int64_t,
                               float*);
          static constexpr Dot avx2[4] = {dots24_avx<KK, 1>, dots24_avx<KK, 2>,
                                          dots24_avx<KK, 3>, dots24_avx<KK, 4>};
#if VPR_AVX512
          static constexpr Dot avx512[4] = {dots24_avx512<KK, 1>, dots24_avx512<KK, 2>,
                                            dots24_avx512<KK, 3>, dots24_avx512<KK, 4>};
          const Dot* dots = g_avx512 ? avx512 : avx2;
#else
          const Dot* dots = avx2;
#endif
          dots[std::min<int64_t>(T, 4) - 1](row(o), bits + q0 / 2, cols, x, ldx, s);
          return;
        }
#endif
        std::fill(s, s + T, 0.f);
        dots24_scalar<KK>(row(o), bits, q0, 0, cols, x, ldx, T, s);
      });
      return;
    }
    expand(o, buf);
    for (int64_t t = 0; t < T; ++t) s[t] = dot_k<F32>(reinterpret_cast<const char*>(buf), 1.f, x + t * ldx, cols);
  }

  void expand(int64_t o, float* buf) const {
    const char* v = row(o);
    const int64_t first = o * k;  // index of the row's first value in the bit stream
#if VPR_AVX2
    if (n == 2 && m == 4 && (kind == F16 || kind == BF16) && (first * width) % 8 == 0) {
      const Table24& t = table24();
      const uint8_t* p = bits + first * width / 8;
      const int64_t whole = cols / 8;  // bytes of 4 indices = 8 dense lanes
      for (int64_t g = 0; g < whole; ++g) {
        const __m128i raw = _mm_loadl_epi64(
            reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(v) + 4 * g));
        const __m256 vals = kind == F16 ? _mm256_cvtph_ps(raw)
                                        : _mm256_castsi256_ps(_mm256_slli_epi32(
                                              _mm256_cvtepu16_epi32(raw), 16));
        const uint8_t b = p[g];
        __m256 d = _mm256_permutevar8x32_ps(
            vals, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.perm[b])));
        d = _mm256_and_ps(d, _mm256_castsi256_ps(
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.mask[b]))));
        _mm256_storeu_ps(buf + 8 * g, d);
      }
      if (whole * 8 < cols) expand_scalar(o, buf, whole * 8 / m);
      return;
    }
#endif
    expand_scalar(o, buf, 0);
  }

  // Row o as its stored 16-bit values into dst[0..cols) (zeros where pruned), for 2:4 rows that
  // start on an index byte: one byte shuffle per 8 columns. False (nothing written) elsewhere.
  bool expand16(int64_t o, uint16_t* dst) const {
#if VPR_AVX2
    const int64_t first = o * k;
    if (n != 2 || m != 4 || elem_size(kind) != 2 || (first * width) % 8 != 0) return false;
    const Table24& t = table24();
    const uint8_t* p = bits + first * width / 8;
    const uint16_t* v = reinterpret_cast<const uint16_t*>(row(o));
    const int64_t whole = cols / 8;
    auto shuffle = [&](int64_t g) {  // 2 x 8 columns from index bytes g, g + 1
      const __m256i raw = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v + 4 * g))),
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(v + 4 * g + 4)), 1);
      const __m256i shuf =
          _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(t.bytes[p[g + 1]]),
                              reinterpret_cast<const __m128i*>(t.bytes[p[g]]));
      return _mm256_shuffle_epi8(raw, shuf);
    };
    int64_t g = 0;
    for (; g + 4 <= whole; g += 4) {  // 32 columns: two 16-lane shuffles
      uint16_t* d = dst + 8 * g;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), shuffle(g));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 16), shuffle(g + 2));
    }
    for (; g < whole; ++g) {
      const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(v + 4 * g));
      const __m128i shuf = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.bytes[p[g]]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8 * g), _mm_shuffle_epi8(raw, shuf));
    }
    if (whole * 8 < cols) {  // one group of 4 left (cols % 8 == 4)
      uint16_t* d = dst + 8 * whole;
      const uint8_t b = p[whole] & 15;
      for (int64_t l = 0; l < 4; ++l) d[l] = 0;
      d[b & 3] = v[4 * whole];
      d[b >> 2] = v[4 * whole + 1];
    }
    return true;
#else
    (void)o, (void)dst;
    return false;
#endif
  }

  // Groups from `group0` on, one value at a time (any N:M, any alignment).
  void expand_scalar(int64_t o, float* buf, int64_t group0) const {
    const int64_t groups = cols / m;
    std::fill(buf + group0 * m, buf + cols, 0.f);
    const char* v = row(o);
    const int64_t mask = (1 << width) - 1;
    for (int64_t g = group0; g < groups; ++g) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t idx = g * n + j;
        const int64_t bit = (o * k + idx) * width;
        const int64_t byte = bit >> 3;
        uint32_t word = bits[byte];
        if (byte + 1 < nbytes) word |= uint32_t(bits[byte + 1]) << 8;
        const int64_t pos = (word >> (bit & 7)) & mask;  // < m: validated at load
        widen(v + idx * elem_size(kind), kind, 1.f, 1, buf + g * m + pos);
      }
    }
  }
};

struct MaskRows {
  const char* values;
  Kind kind;
  const uint8_t* bits;
  const int64_t* offsets;  // rows + 1, validated against the bitmask
  int64_t cols;

  void dots(int64_t o, const float* x, int64_t ldx, int64_t T, float* s, float* buf) const {
    expand(o, buf);
    for (int64_t t = 0; t < T; ++t) s[t] = dot_k<F32>(reinterpret_cast<const char*>(buf), 1.f, x + t * ldx, cols);
  }

  bool expand16(int64_t, uint16_t*) const { return false; }  // expand() instead

  void expand(int64_t o, float* buf) const {
    std::fill(buf, buf + cols, 0.f);
    const size_t es = elem_size(kind);
    int64_t next = offsets[o];
    int64_t bit = o * cols;
    const int64_t end = bit + cols;
    auto put = [&](int64_t b) {
      widen(values + next * es, kind, 1.f, 1, buf + (b - o * cols));
      ++next;
    };
    for (; bit < end && (bit & 7); ++bit)
      if ((bits[bit >> 3] >> (bit & 7)) & 1) put(bit);
    for (; bit + 8 <= end; bit += 8) {
      unsigned byte = bits[bit >> 3];
      while (byte) {
        int j = __builtin_ctz(byte);
        put(bit + j);
        byte &= byte - 1;
      }
    }
    for (; bit < end; ++bit)
      if ((bits[bit >> 3] >> (bit & 7)) & 1) put(bit);
  }
};

// Tuning (set_tuning, for benchmarks): up to g_small_tokens tokens the few-token path, above
// it the column-blocked one (many_tokens); 0 (the default): by the rows' kind, few_token_limit.
int64_t g_small_tokens = 0;

// Tokens up to which the few-token path (each row read once per 4 tokens, straight from its
// packed form) beats the column-blocked one: 8 for 2:4 rows the vector dot reads from their
// index bytes, 4 for the others, whose rows are widened once per 4 tokens (dense factor rows,
// the z = B x pass, were not measured apart). On the 7B-shaped block (Xeon with AMX, 2
// threads, load ~1, 2026-12-03): 2:4 at 2 / 4 / 8 tokens 15.6 / 22.0 / 41.1 ms
// against 64.1 / 64.3 / 61.2 for the blocked path, at 16 tokens 89.6 against 60.3; 4:8 and
// unstructured 0.5 at 2-4 tokens 0.8-0.95x of the blocked path's time, at 8 tokens 1.8-1.9x
// (ad hoc probes of the kernel calls; bench/RESULTS_runtime.md).
template <class E>
int64_t few_token_limit(const E& e) {
  if constexpr (std::is_same_v<E, NMRows>)
    if (e.n == 2 && e.m == 4 && e.kind != I8 && e.cols % 8 == 0) return 8;
  return 4;
}

// out (rows x T, row-major) = M x^T [+ bias] [+ A z^T] for M given by `e`, x (T x cols) fp32,
// z (T x r) fp32 and A's rows given by `a` (or null).
template <class E>
void few_tokens(const E& e, int64_t rows, int64_t cols, const float* x, int64_t T,
                const float* bias, const DenseRows* a, const float* z, float* out) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(cols + 8);
    float s[kMaxT], sa[kMaxT];
    for (int64_t o = begin; o < end; ++o) {
      for (int64_t t0 = 0; t0 < T; t0 += kMaxT) {
        const int64_t nt = std::min(kMaxT, T - t0);
        e.dots(o, x + t0 * cols, cols, nt, s, buf.data());
        if (a) a->dots(o, z + t0 * a->cols, a->cols, nt, sa, nullptr);
        for (int64_t t = 0; t < nt; ++t)
          out[o * T + t0 + t] = s[t] + (bias ? bias[o] : 0.f) + (a ? sa[t] : 0.f);
      }
    }
  });
}

// ---- many tokens: blocked over input columns, a register-blocked micro-kernel --------------
// The classic GEMM blocking with the weight kept compact. The input columns (x's, then z's for
// the A part) are cut into blocks of g_block_cols; for each block the tokens are packed into
// panels of kTB: panel[c][t] = x[p*kTB + t][k0 + c], zero past the last token, so one block's
// panel (256 x 16 floats = 16 KB) sits in L1. A thread takes a group of kGroup rows (groups
// handed out dynamically: a core shared with another job gets fewer), and for each column block
// decodes the group's rows once into their kept values (fp32) and panel offsets c*kTB, then
// runs every token panel through the micro-kernel for every row of the group: two loads and two
// FMAs per kept weight per kTB tokens, all from L1, accumulated into the group's outputs (L1/L2).
// Each packed weight is read from memory once per call, no dense row or tile exists.
constexpr int64_t kTB = 16;
constexpr int64_t kGroup = 32;

// acc[0..kTB) += sum_j vals[j] * panel[offs[j] .. + kTB)
inline void micro16(const float* vals, const int32_t* offs, int64_t cnt, const float* panel,
                    float* acc) {
#if VPR_AVX2
  __m256 a0 = _mm256_loadu_ps(acc), a1 = _mm256_loadu_ps(acc + 8);
  __m256 a2 = _mm256_setzero_ps(), a3 = a2, a4 = a2, a5 = a2, a6 = a2, a7 = a2;
  int64_t j = 0;
  for (; j + 4 <= cnt; j += 4) {
    const float* p0 = panel + offs[j];
    const float* p1 = panel + offs[j + 1];
    const float* p2 = panel + offs[j + 2];
    const float* p3 = panel + offs[j + 3];
    const __m256 v0 = _mm256_broadcast_ss(vals + j), v1 = _mm256_broadcast_ss(vals + j + 1);
    const __m256 v2 = _mm256_broadcast_ss(vals + j + 2), v3 = _mm256_broadcast_ss(vals + j + 3);
    a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p0), a0);
    a1 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p0 + 8), a1);
    a2 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(p1), a2);
    a3 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(p1 + 8), a3);
    a4 = _mm256_fmadd_ps(v2, _mm256_loadu_ps(p2), a4);
    a5 = _mm256_fmadd_ps(v2, _mm256_loadu_ps(p2 + 8), a5);
    a6 = _mm256_fmadd_ps(v3, _mm256_loadu_ps(p3), a6);
    a7 = _mm256_fmadd_ps(v3, _mm256_loadu_ps(p3 + 8), a7);
  }
  for (; j < cnt; ++j) {
    const float* p0 = panel + offs[j];
    const __m256 v0 = _mm256_broadcast_ss(vals + j);
    a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p0), a0);
    a1 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p0 + 8), a1);
  }
  _mm256_storeu_ps(acc, _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a4, a6)));
  _mm256_storeu_ps(acc + 8, _mm256_add_ps(_mm256_add_ps(a1, a3), _mm256_add_ps(a5, a7)));
#else
  for (int64_t j = 0; j < cnt; ++j) {
    const float v = vals[j];
    const float* p = panel + offs[j];
    for (int64_t t = 0; t < kTB; ++t) acc[t] += v * p[t];
  }
#endif
}

// The same for two token panels at once (p and q: each value and offset loaded once for 32
// tokens, 1.5 loads per FMA instead of 2).
inline void micro16x2(const float* vals, const int32_t* offs, int64_t cnt, const float* p,
                      const float* q, float* acc_p, float* acc_q) {
#if VPR_AVX2
  __m256 a0 = _mm256_loadu_ps(acc_p), a1 = _mm256_loadu_ps(acc_p + 8);
  __m256 a2 = _mm256_loadu_ps(acc_q), a3 = _mm256_loadu_ps(acc_q + 8);
  __m256 a4 = _mm256_setzero_ps(), a5 = a4, a6 = a4, a7 = a4;
  int64_t j = 0;
  for (; j + 2 <= cnt; j += 2) {
    const int64_t o0 = offs[j], o1 = offs[j + 1];
    const __m256 v0 = _mm256_broadcast_ss(vals + j), v1 = _mm256_broadcast_ss(vals + j + 1);
    a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p + o0), a0);
    a1 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p + o0 + 8), a1);
    a2 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(q + o0), a2);
    a3 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(q + o0 + 8), a3);
    a4 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(p + o1), a4);
    a5 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(p + o1 + 8), a5);
    a6 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(q + o1), a6);
    a7 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(q + o1 + 8), a7);
  }
  for (; j < cnt; ++j) {
    const int64_t o0 = offs[j];
    const __m256 v0 = _mm256_broadcast_ss(vals + j);
    a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p + o0), a0);
    a1 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(p + o0 + 8), a1);
    a2 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(q + o0), a2);
    a3 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(q + o0 + 8), a3);
  }
  _mm256_storeu_ps(acc_p, _mm256_add_ps(a0, a4));
  _mm256_storeu_ps(acc_p + 8, _mm256_add_ps(a1, a5));
  _mm256_storeu_ps(acc_q, _mm256_add_ps(a2, a6));
  _mm256_storeu_ps(acc_q + 8, _mm256_add_ps(a3, a7));
#else
  micro16(vals, offs, cnt, p, acc_p);
  micro16(vals, offs, cnt, q, acc_q);
#endif
}

// Kept values of row o in columns [k0, k1) as (fp32 value, (c - k0) * kTB) pairs; returns how
// many. `cur` is the row's running position in its values (used by the bitmask rows, whose
// blocks hold a varying count; starts at 0 for the others).
inline int64_t decode_block(const DenseRows& e, int64_t o, int64_t k0, int64_t k1, int64_t&,
                            float* vals, int32_t* offs) {
  widen(e.row(o) + k0 * elem_size(e.kind), e.kind, e.scale, k1 - k0, vals);
  for (int64_t c = 0; c < k1 - k0; ++c) offs[c] = int32_t(c * kTB);
  return k1 - k0;
}

// k0 and k1 are multiples of m (block edges are multiples of 16 and d_in of m).
inline int64_t decode_block(const NMRows& e, int64_t o, int64_t k0, int64_t k1, int64_t&,
                            float* vals, int32_t* offs) {
  const char* v = e.row(o);
  const int64_t mask = (1 << e.width) - 1;
  const int64_t j_begin = k0 / e.m * e.n, j_end = k1 / e.m * e.n;
  by_kind(e.kind, [&](auto K) {
    constexpr Kind KK = decltype(K)::value;
    int64_t j = j_begin;
#if VPR_AVX2
    const int64_t q0 = o * (e.cols / 4) + k0 / 4;  // nibble of the block's first group
    if (e.n == 2 && e.m == 4 && q0 % 2 == 0) {  // 8 values and offsets from two index bytes
      const uint8_t* p = e.bits + q0 / 2;
      const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
      const __m256i three = _mm256_set1_epi32(3);
      const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12);
      for (int64_t c = 0; j + 8 <= j_end; ++c, j += 8) {
        uint16_t w;
        std::memcpy(&w, p + 2 * c, 2);
        __m256i col = _mm256_add_epi32(
            _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w), shifts), three), base);
        col = _mm256_add_epi32(col, _mm256_set1_epi32(int32_t(16 * c)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(offs + j - j_begin),
                            _mm256_slli_epi32(col, 4));  // * kTB
        _mm256_storeu_ps(vals + j - j_begin, load8<KK>(v, 1.f, j));
      }
    }
#endif
    for (; j < j_end; ++j) {
      const int64_t bit = (o * e.k + j) * e.width;
      const int64_t byte = bit >> 3;
      uint32_t word = e.bits[byte];
      if (byte + 1 < e.nbytes) word |= uint32_t(e.bits[byte + 1]) << 8;
      const int64_t pos = (word >> (bit & 7)) & mask;  // < m: validated at load
      vals[j - j_begin] = load1<KK>(v, 1.f, j);
      offs[j - j_begin] = int32_t((j / e.n * e.m + pos - k0) * kTB);
    }
  });
  return j_end - j_begin;
}
static_assert(kTB == 16, "decode_block's shift by 4 is * kTB");

inline int64_t decode_block(const MaskRows& e, int64_t o, int64_t k0, int64_t k1, int64_t& cur,
                            float* vals, int32_t* offs) {
  const size_t es = elem_size(e.kind);
  int64_t cnt = 0;
  auto put = [&](int64_t c) {
    widen(e.values + (e.offsets[o] + cur) * es, e.kind, 1.f, 1, vals + cnt);
    offs[cnt++] = int32_t((c - k0) * kTB);
    ++cur;
  };
  const int64_t base = o * e.cols;
  int64_t c = k0;
  for (; c < k1 && ((base + c) & 7); ++c)
    if ((e.bits[(base + c) >> 3] >> ((base + c) & 7)) & 1) put(c);
  for (; c + 8 <= k1; c += 8) {
    unsigned byte = e.bits[(base + c) >> 3];
    while (byte) {
      put(c + __builtin_ctz(byte));
      byte &= byte - 1;
    }
  }
  for (; c < k1; ++c)
    if ((e.bits[(base + c) >> 3] >> ((base + c) & 7)) & 1) put(c);
  return cnt;
}

// Ask for [p, p + bytes) in cache ahead of its use (the next column block of a row group: the
// group's rows are 32 separate streams, too many for the hardware prefetchers).
inline void prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
}

// The stored bytes decode_block(o, k0, k1) will read.
inline void prefetch_block(const DenseRows& e, int64_t o, int64_t k0, int64_t k1, int64_t) {
  const size_t es = elem_size(e.kind);
  prefetch(e.row(o) + k0 * es, (k1 - k0) * es);
}
inline void prefetch_block(const NMRows& e, int64_t o, int64_t k0, int64_t k1, int64_t) {
  const size_t es = elem_size(e.kind);
  const int64_t j0 = k0 / e.m * e.n, j1 = k1 / e.m * e.n;
  prefetch(e.row(o) + j0 * es, (j1 - j0) * es);
  prefetch(e.bits + (o * e.k + j0) * e.width / 8, (j1 - j0) * e.width / 8 + 1);
}
inline void prefetch_block(const MaskRows& e, int64_t o, int64_t k0, int64_t k1, int64_t cur) {
  prefetch(e.values + (e.offsets[o] + cur) * elem_size(e.kind), (k1 - k0) / 2 * elem_size(e.kind));
  prefetch(e.bits + (o * e.cols + k0) / 8, (k1 - k0) / 8 + 1);
}

// Columns per block of the many-token path (set_tuning); a multiple of 16.
int64_t g_block_cols = 0;  // 0: by the token count
int64_t g_sub_rows = 0;    // rows decoded at once (0: by the token count)

// out (rows x T, row-major) as in few_tokens, for many tokens.
template <class E>
void many_tokens(const E& e, int64_t rows, int64_t cols, const float* x, int64_t T,
                 const float* bias, const DenseRows* a, const float* z, float* out) {
  const int64_t r = a ? a->cols : 0;
  const int64_t ke = cols + r;
  const int64_t np = (T + kTB - 1) / kTB, tp = np * kTB;
  // Columns per block: wider with one or two token panels (fewer passes over the outputs),
  // 256 (16 KB per panel in L1) with more; rows decoded at once: with few panels a few (their
  // values, offsets and the panels stay in L1), with many the whole group (each decoded row
  // then serves every panel). Measured on Zen 3 (bench/RESULTS_runtime.md).
  const int64_t kc = g_block_cols > 0 ? g_block_cols : (np <= 2 ? 512 : 256);
  const int64_t sub = g_sub_rows > 0 ? std::min(g_sub_rows, kGroup) : (np <= 2 ? 2 : kGroup);
  TORCH_CHECK(kc * kTB < (int64_t(1) << 31), "sparse_linear: block too wide for int32 offsets");
  std::vector<int64_t> edges;  // column blocks: x's columns, then z's (the A part)
  for (int64_t c = 0; c < cols; c += kc) edges.push_back(c);
  for (int64_t c = cols; c < ke; c += kc) edges.push_back(c);
  edges.push_back(ke);
  auto block_end = [&](size_t b) { return edges[b + 1]; };
  // panel of block b, token panel p: ke * np * kTB floats in all, block b's start at k0 * tp
  auto panels = torch::empty({ke * tp}, torch::kFloat32);
  float* pp = panels.data_ptr<float>();
  const int64_t nblocks = int64_t(edges.size()) - 1;
  at::parallel_for(0, nblocks * np, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / np, p = i % np, k0 = edges[b], w = block_end(b) - k0;
      float* dst = pp + k0 * tp + p * w * kTB;
      const int64_t nt = std::min(kTB, T - p * kTB);
      for (int64_t c = 0; c < w; ++c) {
        const int64_t col = k0 + c;
        float* d = dst + c * kTB;
        for (int64_t t = 0; t < nt; ++t) {
          const int64_t tok = p * kTB + t;
          d[t] = col < cols ? x[tok * cols + col] : z[tok * r + col - cols];
        }
        for (int64_t t = nt; t < kTB; ++t) d[t] = 0.f;
      }
    }
  });
  const int64_t groups = (rows + kGroup - 1) / kGroup;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), groups);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    std::vector<float> vals(sub * kc), acc(kGroup * tp);
    std::vector<int32_t> offs(sub * kc);
    int64_t cnt[kGroup], cur[kGroup];
    for (int64_t g = next++; g < groups; g = next++) {
      const int64_t r0 = g * kGroup, nr = std::min(kGroup, rows - r0);
      for (int64_t i = 0; i < nr; ++i) {
        std::fill(acc.begin() + i * tp, acc.begin() + (i + 1) * tp, bias ? bias[r0 + i] : 0.f);
        cur[i] = 0;
      }
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t k0 = edges[b], k1 = block_end(b);
        for (int64_t s0 = 0; s0 < nr; s0 += sub) {  // rows decoded together, then all panels
          const int64_t s1 = std::min(nr, s0 + sub);
          for (int64_t i = s0; i < s1; ++i) {
            float* v = vals.data() + (i - s0) * kc;
            int32_t* f = offs.data() + (i - s0) * kc;
            int64_t unused = 0;
            cnt[i] = k0 < cols ? decode_block(e, r0 + i, k0, k1, cur[i], v, f)
                               : decode_block(*a, r0 + i, k0 - cols, k1 - cols, unused, v, f);
            if (b + 1 < nblocks) {  // the same row's next block, read while this one computes
              const int64_t n0 = edges[b + 1], n1 = block_end(b + 1);
              if (n0 < cols)
                prefetch_block(e, r0 + i, n0, n1, cur[i]);
              else
                prefetch_block(*a, r0 + i, n0 - cols, n1 - cols, 0);
            }
          }
          const int64_t step = (k1 - k0) * kTB;  // floats from one token panel to the next
          for (int64_t p = 0; p < np; p += 2) {
            const float* panel = pp + k0 * tp + p * step;
            for (int64_t i = s0; i < s1; ++i) {
              const float* v = vals.data() + (i - s0) * kc;
              const int32_t* f = offs.data() + (i - s0) * kc;
              float* out_p = acc.data() + i * tp + p * kTB;
              if (p + 1 < np)
                micro16x2(v, f, cnt[i], panel, panel + step, out_p, out_p + kTB);
              else
                micro16(v, f, cnt[i], panel, out_p);
            }
          }
        }
      }
      for (int64_t i = 0; i < nr; ++i)
        std::memcpy(out + (r0 + i) * T, acc.data() + i * tp, T * sizeof(float));
    }
  });
}

template <class E>
void rows_times(const E& e, int64_t rows, int64_t cols, const float* x, int64_t T,
                const float* bias, const DenseRows* a, const float* z, float* out) {
  if (rows == 0 || T == 0) return;
  if (T <= (g_small_tokens > 0 ? g_small_tokens : few_token_limit(e)))
    few_tokens(e, rows, cols, x, T, bias, a, z, out);
  else
    many_tokens(e, rows, cols, x, T, bias, a, z, out);
}

struct Factors {
  bool present = false;
  DenseRows a, b;
  int64_t r = 0;
};

Factors read_factors(const c10::optional<torch::Tensor>& a, const c10::optional<torch::Tensor>& b,
                     double a_scale, double b_scale, int64_t d_out, int64_t d_in) {
  Factors f;
  if (!a.has_value() || !b.has_value() || a->numel() == 0) return f;
  TORCH_CHECK(a->dim() == 2 && b->dim() == 2 && a->size(0) == d_out && b->size(1) == d_in &&
                  a->size(1) == b->size(0),
              "sparse_linear: factors A ", a->sizes(), " and B ", b->sizes(),
              " do not fit a layer of ", d_out, "x", d_in);
  TORCH_CHECK(a->is_contiguous() && b->is_contiguous(), "sparse_linear: factors not contiguous");
  f.present = true;
  f.r = a->size(1);
  f.a = {static_cast<const char*>(a->data_ptr()), kind_of(*a), float(a_scale), f.r};
  f.b = {static_cast<const char*>(b->data_ptr()), kind_of(*b), float(b_scale), d_in};
  return f;
}

// ---- many tokens on AMX: the decoded rows multiplied in AMX tiles -------------------------
// On a CPU with AMX-BF16, one tile multiply (16x32 by 32x16 bf16, fp32 sums) does the work of
// 512 16-lane FMAs; torch's bf16 GEMM on it runs 16 tokens of the 7B-shaped block in the time
// of one, where the fp32 micro-kernel above took 2.7x as long. So for bf16 values and bf16
// inputs (a model run in bf16), from g_tile_tokens tokens on (4: on the 7B-shaped block, bf16
// values, 2 threads, against the few-token path, 2 / 3 / 4 / 6 tokens 19.5 / 17.9 / 18.1 / 19.0
// ms against 13.4 / 15.7 / 20.3 / 33.5; at 1 token 1.6x of the SIMD dot's; ad hoc probes on a
// Xeon, 2026-12-03, see bench/RESULTS_runtime.md): the tokens are
// laid out once as the tiles' B operand (pairs of columns interleaved, 16 tokens a tile,
// zero-padded to 16 tokens and 32 columns); each thread takes
// groups of 32 rows, decodes them from the packed form into bf16 rows in L2 (2:4: a byte
// shuffle per 8 weights, the stored values copied bit for bit; the GLUESTICK A row appended as
// 32-column-aligned extra columns whose inputs are z = B x, computed the same way first), and
// runs every 32 tokens through four accumulator tiles over all columns. Each packed weight is
// read from memory once per call; at most 32 rows per thread are ever dense, and no BLAS call
// runs inside the threads. The factors and z are rounded to bf16 (the precision a bf16 model
// computes them in).
#if VPR_AVX2 && defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define VPR_TAMX __attribute__((target("amx-tile,amx-bf16")))

bool cpu_has_amx_bf16() {  // CPUID.(EAX=7,ECX=0):EDX[22] AMX-BF16 and [24] AMX-TILE, and
  static const bool ok = [] {  // Linux's permission for the tile state (asked once)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1))
      return false;
    constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;  // arch_prctl, asm/prctl.h
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
  }();
  return ok;
}

struct TileConfig {  // the palette-1 layout _tile_loadconfig reads
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3: sums for rows 0-15/16-31 x tokens 0-15/16-31; 4, 5: rows 0-15, 16-31 of the
// decoded weight (32 columns); 6, 7: the two token tiles.
VPR_TAMX void amx_begin() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  // not GCC 12's _tile_loadconfig: its asm names only 8 bytes of the config as read, so the
  // compiler drops the stores to the rest (ldtilecfg then faults on the stale bytes)
  asm volatile("ldtilecfg %0" ::"m"(cfg));
}
VPR_TAMX void amx_end() { _tile_release(); }

// sums[32 x 32] (row-major fp32) = w[32 rows, stride ldw] . panel over `steps` of 32 columns,
// for one (two: `both`) token tiles; panel tile (p, s) at panel + (p * steps + s) * 512.
VPR_TAMX void amx_rows32(const uint16_t* w, int64_t ldw, const uint16_t* panel, int64_t steps,
                         bool both, float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const uint16_t* q = panel + steps * 512;
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, w + 32 * s, ldw * 2);
    _tile_loadd(5, w + 16 * ldw + 32 * s, ldw * 2);
    _tile_loadd(6, panel + s * 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    if (both) {
      _tile_loadd(7, q + s * 512, 64);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, sums, 128);
  _tile_stored(2, sums + 16 * 32, 128);
  if (both) {
    _tile_stored(1, sums + 16, 128);
    _tile_stored(3, sums + 16 * 32 + 16, 128);
  }
}

// Row o of e as bf16 into dst[0..cols), then zeros up to the next 32 columns: the 2:4 shuffle
// where it applies, else widened and rounded to nearest (exact for values stored as bf16).
template <class E>
void row_bf16(const E& e, int64_t o, int64_t cols, uint16_t* dst, std::vector<float>& buf) {
  bool done = false;
  if constexpr (!std::is_same_v<E, DenseRows>) done = e.expand16(o, dst);
  if (!done) {
    buf.resize(cols + 8);
    e.expand(o, buf.data());
    for (int64_t c = 0; c < cols; ++c) dst[c] = c10::BFloat16(buf[c]).x;
  }
  std::fill(dst + cols, dst + (cols + 31) / 32 * 32, uint16_t(0));
}

// Lay out columns [c0, c0 + n) of tokens (T x n fp32 or bf16 values via `get(t, c)`) as the B
// operand of 32-column steps s0.. of `panel` (Tp/16 token tiles of `steps` steps each).
template <class G>
void fill_panel(uint16_t* panel, int64_t T, int64_t steps, int64_t s0, int64_t n, G get) {
  const int64_t tiles = (T + 15) / 16, width = (n + 31) / 32;
  at::parallel_for(0, tiles * width, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t p = i / width, s = s0 + i % width;
      uint16_t* dst = panel + (p * steps + s) * 512;  // [16 column pairs][16 tokens][2]
      for (int64_t kk = 0; kk < 16; ++kk)
        for (int64_t t = 0; t < 16; ++t)
          for (int64_t j = 0; j < 2; ++j) {
            const int64_t tok = p * 16 + t, col = (s - s0) * 32 + 2 * kk + j;
            dst[(kk * 16 + t) * 2 + j] = tok < T && col < n ? get(tok, col) : uint16_t(0);
          }
    }
  });
}

// out (T x rows, fp32, row stride ldo) = [rows of e | rows of a] . panel^T (+ bias).
template <class E>
void amx_times(const E& e, int64_t rows, int64_t cols, const DenseRows* a, const uint16_t* panel,
               int64_t T, int64_t steps, const float* bias, float* out, int64_t ldo) {
  // rows one 64-byte line longer than the columns: a whole number of 4 KB apart, the 16 rows
  // of a tile load would all fall in one L1 set
  const int64_t ldw = steps * 32 + 32, ax = (cols + 31) / 32 * 32;  // A's columns start at ax
  const int64_t groups = (rows + 31) / 32, pairs = (T + 31) / 32;
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<uint16_t> w(32 * ldw);
    std::vector<float> buf, sums(32 * 32);
    amx_begin();
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t r0 = g * 32, nr = std::min<int64_t>(32, rows - r0);
      for (int64_t i = 0; i < nr; ++i) {
        uint16_t* row = w.data() + i * ldw;
        if (r0 + i + 1 < rows) prefetch_block(e, r0 + i + 1, 0, cols, 0);  // the next row
        row_bf16(e, r0 + i, cols, row, buf);
        if (a) row_bf16(*a, r0 + i, a->cols, row + ax, buf);
      }
      std::fill(w.begin() + nr * ldw, w.end(), uint16_t(0));  // rows past the last
      for (int64_t p = 0; p < pairs; ++p) {
        const bool both = 32 * p + 16 < T;
        amx_rows32(w.data(), ldw, panel + 2 * p * steps * 512, steps, both, sums.data());
        for (int64_t t = 32 * p; t < std::min(T, 32 * p + 32); ++t)
          for (int64_t i = 0; i < nr; ++i)
            out[t * ldo + r0 + i] = sums[i * 32 + t - 32 * p] + (bias ? bias[r0 + i] : 0.f);
      }
    }
    amx_end();
  });
}

template <class E>
torch::Tensor tiled(const E& e, int64_t d_out, int64_t d_in, const torch::Tensor& x,
                    const torch::Tensor& bias, const Factors& f) {
  const int64_t T = x.size(0), tiles = (T + 15) / 16 + 1;  // +1: a spare tile for odd pairs
  const int64_t ax = (d_in + 31) / 32 * 32, r = f.present ? f.r : 0;
  const int64_t steps = (ax + (r + 31) / 32 * 32) / 32;
  std::vector<uint16_t> panel(tiles * steps * 512, 0);
  const uint16_t* xb = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  fill_panel(panel.data(), T, steps, 0, d_in,
             [&](int64_t t, int64_t c) { return xb[t * d_in + c]; });
  if (r) {
    std::vector<float> z(T * r);
    amx_times(f.b, r, d_in, nullptr, panel.data(), T, steps, nullptr, z.data(), r);
    fill_panel(panel.data(), T, steps, ax / 32, r,
               [&](int64_t t, int64_t c) { return c10::BFloat16(z[t * r + c]).x; });
  }
  auto y = torch::empty({T, d_out}, torch::kFloat32);
  amx_times(e, d_out, d_in, r ? &f.a : nullptr, panel.data(), T, steps,
            bias.defined() ? bias.data_ptr<float>() : nullptr, y.data_ptr<float>(), d_out);
  return y;
}
#else
bool cpu_has_amx_bf16() { return false; }
template <class E>
torch::Tensor tiled(const E&, int64_t, int64_t, const torch::Tensor&, const torch::Tensor&,
                    const Factors&) {
  TORCH_CHECK(false, "sparse_linear: built without the AMX path");
}
#endif
bool g_tiles = cpu_has_amx_bf16();  // the AMX path on (use_tiles)
int64_t g_tile_tokens = 4;  // from this many tokens on (set_tuning; below: the few-token path)

template <class E>
torch::Tensor run(const E& e, int64_t d_out, int64_t d_in, const torch::Tensor& x_in,
                  const c10::optional<torch::Tensor>& bias_in, const Factors& f) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == d_in, "sparse_linear: input of shape ",
              x_in.sizes(), " does not fit ", d_in, " input features");
  torch::Tensor bias;
  if (bias_in.has_value()) {
    TORCH_CHECK(bias_in->numel() == d_out, "sparse_linear: bias has ", bias_in->numel(),
                " values for ", d_out, " outputs");
    bias = bias_in->to(torch::kFloat32).contiguous();
  }
  if (g_tiles && e.kind == BF16 && x_in.scalar_type() == torch::kBFloat16 &&
      x_in.size(0) >= g_tile_tokens)
    return tiled(e, d_out, d_in, x_in.contiguous(), bias, f);
  auto x = x_in.to(torch::kFloat32).contiguous();
  const int64_t T = x.size(0);
  auto yt = torch::empty({d_out, T}, torch::kFloat32);
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  if (f.present) {
    auto zt = torch::empty({f.r, T}, torch::kFloat32);  // B x, then A z in the same pass as W x
    rows_times(f.b, f.r, d_in, x.data_ptr<float>(), T, nullptr, nullptr, nullptr,
               zt.data_ptr<float>());
    auto z = zt.t().contiguous();
    rows_times(e, d_out, d_in, x.data_ptr<float>(), T, bp, &f.a, z.data_ptr<float>(),
               yt.data_ptr<float>());
  } else {
    rows_times(e, d_out, d_in, x.data_ptr<float>(), T, bp, nullptr, nullptr, yt.data_ptr<float>());
  }
  return T == 1 ? yt.view({1, d_out}) : yt.t().contiguous();
}

int64_t index_width(int64_t m) {
  int64_t w = 1;
  while ((int64_t(1) << w) < m) ++w;
  return w;
}

void check_values(const torch::Tensor& values) {
  TORCH_CHECK(values.is_contiguous() && values.device().is_cpu(),
              "sparse_linear: values must be a contiguous CPU tensor");
  Kind k = kind_of(values);
  TORCH_CHECK(k != I8, "sparse_linear: int8 weight values need a scale per row (not supported)");
}

}  // namespace

// Raise unless `indices` is exactly the bit stream of a (d_out x d_in) N:M weight: the right
// number of bytes, every index < M and the N indices of each group strictly increasing.
void validate_nm(const torch::Tensor& indices, int64_t n, int64_t m, int64_t d_out,
                 int64_t d_in) {
  TORCH_CHECK(n >= 1 && n <= m && m >= 1 && m <= 256, "N:M must satisfy 1 <= N <= M <= 256");
  TORCH_CHECK(d_in % m == 0, "input dimension ", d_in, " is not a multiple of M=", m);
  TORCH_CHECK(indices.scalar_type() == torch::kUInt8 && indices.dim() == 1 &&
                  indices.is_contiguous(),
              "indices must be a contiguous 1-D uint8 tensor");
  const int64_t width = index_width(m);
  const int64_t count = d_out * (d_in / m) * n;
  const int64_t need = (count * width + 7) / 8;
  TORCH_CHECK(indices.numel() == need, "indices hold ", indices.numel(), " bytes, a ", n, ":",
              m, " weight of shape ", d_out, "x", d_in, " needs ", need);
  const uint8_t* p = indices.data_ptr<uint8_t>();
  const int64_t groups = count / n;
  const int64_t mask = (1 << width) - 1;
  std::atomic<int64_t> bad{-1};
  at::parallel_for(0, groups, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end && bad.load() < 0; ++g) {
      int64_t prev = -1;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t bit = (g * n + j) * width;
        const int64_t byte = bit >> 3;
        uint32_t word = p[byte];
        if (byte + 1 < need) word |= uint32_t(p[byte + 1]) << 8;
        const int64_t pos = (word >> (bit & 7)) & mask;
        if (pos >= m || pos <= prev) {
          bad.store(g);
          return;
        }
        prev = pos;
      }
    }
  });
  TORCH_CHECK(bad.load() < 0, "indices do not name ", n, " distinct positions in order in group ",
              bad.load(), " (of ", m, ")");
}

// Offsets (d_out + 1, int64) of each row's first value, from a bitmask; raises unless the mask
// has exactly the right length and marks exactly `nnz` weights.
torch::Tensor bitmask_row_offsets(const torch::Tensor& bitmask, int64_t d_out, int64_t d_in,
                                  int64_t nnz) {
  TORCH_CHECK(bitmask.scalar_type() == torch::kUInt8 && bitmask.dim() == 1 &&
                  bitmask.is_contiguous(),
              "bitmask must be a contiguous 1-D uint8 tensor");
  const int64_t need = (d_out * d_in + 7) / 8;
  TORCH_CHECK(bitmask.numel() == need, "bitmask holds ", bitmask.numel(), " bytes, a ", d_out,
              "x", d_in, " weight needs ", need);
  const uint8_t* p = bitmask.data_ptr<uint8_t>();
  auto offsets = torch::empty({d_out + 1}, torch::kInt64);
  int64_t* off = offsets.data_ptr<int64_t>();
  off[0] = 0;
  at::parallel_for(0, d_out, 64, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      int64_t c = 0;
      for (int64_t bit = o * d_in, e = bit + d_in; bit < e;) {
        if ((bit & 7) == 0 && bit + 8 <= e) {
          c += __builtin_popcount(p[bit >> 3]);
          bit += 8;
        } else {
          c += (p[bit >> 3] >> (bit & 7)) & 1;
          ++bit;
        }
      }
      off[o + 1] = c;
    }
  });
  for (int64_t o = 0; o < d_out; ++o) off[o + 1] += off[o];
  if (need * 8 > d_out * d_in) {
    const int64_t spare = p[need - 1] >> ((d_out * d_in) & 7);
    TORCH_CHECK(spare == 0, "bitmask has bits set past the weight's end");
  }
  TORCH_CHECK(off[d_out] == nnz, "bitmask marks ", off[d_out], " weights but ", nnz,
              " values are stored");
  return offsets;
}

torch::Tensor nm_linear(const torch::Tensor& x, const torch::Tensor& values,
                        const torch::Tensor& indices, int64_t n, int64_t m, int64_t d_out,
                        int64_t d_in, const c10::optional<torch::Tensor>& bias,
                        const c10::optional<torch::Tensor>& a, const c10::optional<torch::Tensor>& b,
                        double a_scale, double b_scale) {
  check_values(values);
  TORCH_CHECK(d_in % m == 0, "input dimension ", d_in, " is not a multiple of M=", m);
  const int64_t k = d_in / m * n;
  TORCH_CHECK(values.numel() == d_out * k, "values hold ", values.numel(), ", a ", n, ":", m,
              " weight of shape ", d_out, "x", d_in, " needs ", d_out * k);
  const int64_t width = index_width(m);
  TORCH_CHECK(indices.scalar_type() == torch::kUInt8 && indices.is_contiguous() &&
                  indices.numel() == (d_out * k * width + 7) / 8,
              "indices do not fit the weight (validate_nm them at load)");
  NMRows e{static_cast<const char*>(values.data_ptr()), kind_of(values),
           indices.data_ptr<uint8_t>(), indices.numel(), n, m, width, d_in, k};
  return run(e, d_out, d_in, x, bias, read_factors(a, b, a_scale, b_scale, d_out, d_in));
}

torch::Tensor bitmask_linear(const torch::Tensor& x, const torch::Tensor& values,
                             const torch::Tensor& bitmask, const torch::Tensor& offsets,
                             int64_t d_out, int64_t d_in, const c10::optional<torch::Tensor>& bias,
                             const c10::optional<torch::Tensor>& a,
                             const c10::optional<torch::Tensor>& b, double a_scale,
                             double b_scale) {
  check_values(values);
  TORCH_CHECK(bitmask.scalar_type() == torch::kUInt8 && bitmask.is_contiguous() &&
                  bitmask.numel() == (d_out * d_in + 7) / 8,
              "bitmask does not fit the weight");
  TORCH_CHECK(offsets.scalar_type() == torch::kInt64 && offsets.numel() == d_out + 1 &&
                  offsets.is_contiguous() && offsets.data_ptr<int64_t>()[d_out] == values.numel(),
              "row offsets do not fit the values (bitmask_row_offsets them at load)");
  MaskRows e{static_cast<const char*>(values.data_ptr()), kind_of(values),
             bitmask.data_ptr<uint8_t>(), offsets.data_ptr<int64_t>(), d_in};
  return run(e, d_out, d_in, x, bias, read_factors(a, b, a_scale, b_scale, d_out, d_in));
}

bool vectorized() { return VPR_AVX2; }

// How many threads one parallel_for over n items ran on: ATen's parallel_for is an inline
// OpenMP region, so a build without -fopenmp runs every call on one thread (as this kernel
// did until 2026-12-02, whatever torch's thread count); the test that would have caught it.
int64_t parallel_threads(int64_t n) {
  std::mutex lock;
  std::set<int> seen;
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    volatile double spin = 0;  // long enough that every thread gets a chunk
    for (int i = 0; i < 200000; ++i) spin = spin + i;
    std::lock_guard<std::mutex> guard(lock);
    seen.insert(at::get_thread_num());
  });
  return static_cast<int64_t>(seen.size());
}

// The SIMD paths this build takes on this CPU: what a cached result's key must name, since
// the AVX-512 and AVX2 dots sum in other orders.
std::string simd() { return g_avx512 ? "avx512" : (VPR_AVX2 ? "avx2" : "portable"); }

// Turn the AVX-512 2:4 dot on or off (< 0: unchanged; on only where the CPU has it), for
// tests and benchmarks that compare it with the AVX2 path; returns whether it is on.
bool use_avx512(int64_t on) {
  if (on >= 0) g_avx512 = on > 0 && cpu_has_avx512();
  return g_avx512;
}

// Turn the AMX tile path (bf16 values and inputs, many tokens; `tiled`) on or off (< 0:
// unchanged; on only where the CPU has AMX-BF16); returns whether it is on.
bool use_tiles(int64_t on) {
  if (on >= 0) g_tiles = on > 0 && cpu_has_amx_bf16();
  return g_tiles;
}

// Set the few-token limit (0: by the rows' kind, few_token_limit), the many-token path's
// columns per block (rounded up to a multiple of 16) and rows decoded at once, and the tokens
// from which the AMX tile path runs (tile tokens <= 0, the others < 0: unchanged); returns all
// four.
std::vector<int64_t> set_tuning(int64_t small_tokens, int64_t block_cols, int64_t sub_rows,
                                int64_t tile_tokens) {
  if (small_tokens >= 0) g_small_tokens = small_tokens;
  if (block_cols >= 0) g_block_cols = (block_cols + 15) / 16 * 16;
  if (sub_rows >= 0) g_sub_rows = sub_rows;
  if (tile_tokens > 0) g_tile_tokens = tile_tokens;
  return {g_small_tokens, g_block_cols, g_sub_rows, g_tile_tokens};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("validate_nm", &validate_nm);
  mod.def("bitmask_row_offsets", &bitmask_row_offsets);
  mod.def("nm_linear", &nm_linear);
  mod.def("bitmask_linear", &bitmask_linear);
  mod.def("vectorized", &vectorized, "True when built with the AVX2/FMA/F16C paths");
  mod.def("parallel_threads", &parallel_threads, "threads one parallel_for over n items ran on");
  mod.def("simd", &simd, "the SIMD paths taken here: avx512, avx2 or portable");
  mod.def("use_avx512", &use_avx512, "AVX-512 2:4 dot on (1) / off (0) / unchanged (-1); "
          "returns whether it is on", py::arg("on") = -1);
  mod.def("use_tiles", &use_tiles, "AMX tile path (bf16, many tokens) on (1) / off (0) / "
          "unchanged (-1); returns whether it is on", py::arg("on") = -1);
  mod.def("set_tuning", &set_tuning, "few-token limit (0: by the rows' kind, < 0: unchanged), "
          "block columns and rows decoded at once (0: by token count, < 0: unchanged), tokens "
          "from which the AMX tile path runs (<= 0: unchanged)", py::arg("small_tokens") = -1,
          py::arg("block_cols") = -1, py::arg("sub_rows") = -1, py::arg("tile_tokens") = 0);
}
