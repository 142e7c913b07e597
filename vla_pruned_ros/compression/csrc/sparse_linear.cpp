// Sparse linear layer for CPU: y = W_p x + b + A (B x), reading only the packed form of W_p.
//
// W_p is N:M (values (d_out, d_in/M*N) fp16/bf16/fp32 plus the little-endian bit stream of each
// value's position in its group, ceil(log2 M) bits each) or unstructured (values of the kept
// weights in row-major order, a 1-bit-per-weight mask and per-row offsets into the values).
// A (d_out, r) and B (r, d_in) are fp16/bf16/fp32 or int8 with one scale each.
//
// Each output row is expanded into a small fp32 buffer that stays in L1 and dotted with the
// tokens (few tokens), or a tile of rows is expanded and multiplied with a GEMM (many tokens):
// the dense weight of a layer never exists. Rows are spread over threads (at::parallel_for).
// AVX2+FMA+F16C paths are compiled where the compiler targets them; a portable scalar path
// elsewhere (aarch64). Inputs are validated once (validate_nm, bitmask_row_offsets) and every
// call re-checks the shapes it relies on, so a malformed tensor raises instead of reading out of
// bounds.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cstring>
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

// ---- dense fp32 helpers ---------------------------------------------------------------------
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#if VPR_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8)
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
  __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  s = _mm_cvtss_f32(h);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Convert n stored values to fp32.
inline void widen(const void* src, Kind k, float scale, int64_t n, float* dst) {
  int64_t i = 0;
  switch (k) {
    case F32: std::memcpy(dst, src, n * sizeof(float)); return;
    case F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
#if VPR_AVX2
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + i))));
#endif
      const c10::Half* h = static_cast<const c10::Half*>(src);
      for (; i < n; ++i) dst[i] = static_cast<float>(h[i]);
      return;
    }
    case BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
#if VPR_AVX2
      for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(s + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
#endif
      const c10::BFloat16* b = static_cast<const c10::BFloat16*>(src);
      for (; i < n; ++i) dst[i] = static_cast<float>(b[i]);
      return;
    }
    case I8: {
      const int8_t* s = static_cast<const int8_t*>(src);
#if VPR_AVX2
      __m256 sc = _mm256_set1_ps(scale);
      for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(s + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(w), sc));
      }
#endif
      for (; i < n; ++i) dst[i] = static_cast<float>(s[i]) * scale;
      return;
    }
  }
}

inline size_t elem_size(Kind k) { return k == F32 ? 4 : (k == I8 ? 1 : 2); }

// ---- row expanders: row o of a (rows x cols) matrix, as fp32 into buf[0..cols) ---------------
struct DenseRows {
  const char* data;
  Kind kind;
  float scale;
  int64_t cols;
  void expand(int64_t o, float* buf) const {
    widen(data + o * cols * elem_size(kind), kind, scale, cols, buf);
  }
};

// 2:4 lookup: for a byte of four 2-bit indices (two groups), the dense lane of each value.
struct Table24 {
  int32_t perm[256][8];
  int32_t mask[256][8];
  Table24() {
    for (int b = 0; b < 256; ++b) {
      for (int l = 0; l < 8; ++l) perm[b][l] = 0, mask[b][l] = 0;
      for (int j = 0; j < 4; ++j) {
        int lane = ((b >> (2 * j)) & 3) + (j >= 2 ? 4 : 0);
        perm[b][lane] = j;
        mask[b][lane] = -1;
      }
    }
  }
};
const Table24& table24() {
  static const Table24 t;
  return t;
}

struct NMRows {
  const char* values;  // (rows, k) with k = cols / m * n
  Kind kind;
  const uint8_t* bits;  // ceil(rows * k * width / 8) bytes, validated
  int64_t nbytes, n, m, width, cols, k;

  void expand(int64_t o, float* buf) const {
    const char* v = values + o * k * elem_size(kind);
    const int64_t first = o * k;  // index of the row's first value in the bit stream
#if VPR_AVX2
    if (n == 2 && m == 4 && kind != F32 && kind != I8 && (first * width) % 8 == 0) {
      const Table24& t = table24();
      const uint8_t* p = bits + first * width / 8;
      const uint16_t* s = reinterpret_cast<const uint16_t*>(v);
      const int64_t whole = cols / 8;  // bytes of 4 indices = 8 dense lanes
      for (int64_t g = 0; g < whole; ++g) {
        __m128i raw = _mm_loadl_epi64((const __m128i*)(s + 4 * g));
        __m256 vals = kind == F16 ? _mm256_cvtph_ps(raw)
                                  : _mm256_castsi256_ps(_mm256_slli_epi32(
                                        _mm256_cvtepu16_epi32(raw), 16));
        const uint8_t b = p[g];
        __m256 d = _mm256_permutevar8x32_ps(vals, _mm256_loadu_si256((const __m256i*)t.perm[b]));
        d = _mm256_and_ps(d, _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i*)t.mask[b])));
        _mm256_storeu_ps(buf + 8 * g, d);
      }
      if (whole * 8 < cols) expand_scalar(o, buf, whole * 8 / m);
      return;
    }
#endif
    expand_scalar(o, buf, 0);
  }

  // Groups from `group0` on, one value at a time (any N:M, any alignment).
  void expand_scalar(int64_t o, float* buf, int64_t group0) const {
    const int64_t groups = cols / m;
    std::fill(buf + group0 * m, buf + cols, 0.f);
    const char* v = values + o * k * elem_size(kind);
    const int64_t mask = (1 << width) - 1;
    for (int64_t g = group0; g < groups; ++g) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t idx = g * n + j;
        const int64_t bit = (o * k + idx) * width;
        const int64_t byte = bit >> 3;
        uint32_t word = bits[byte];
        if (byte + 1 < nbytes) word |= uint32_t(bits[byte + 1]) << 8;
        const int64_t pos = (word >> (bit & 7)) & mask;  // < m: validated at load
        float x;
        widen(v + idx * elem_size(kind), kind, 1.f, 1, &x);
        buf[g * m + pos] = x;
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

constexpr int64_t kSmallT = 8;  // up to this many tokens: expand each row once, dot per token

// out (rows x T, row-major) = M x^T [+ bias] [+ A2 z^T] for M given by `e`, x (T x cols) fp32.
template <class E, class E2>
void rows_times(const E& e, int64_t rows, int64_t cols, const float* x, int64_t T,
                const float* bias, const E2* e2, int64_t cols2, const float* z, float* out) {
  if (rows == 0) return;
  if (T <= kSmallT) {
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> buf(cols + 8), buf2(cols2 + 8);
      for (int64_t o = begin; o < end; ++o) {
        e.expand(o, buf.data());
        if (e2) e2->expand(o, buf2.data());
        for (int64_t t = 0; t < T; ++t) {
          float s = dot(buf.data(), x + t * cols, cols);
          if (bias) s += bias[o];
          if (e2) s += dot(buf2.data(), z + t * cols2, cols2);
          out[o * T + t] = s;
        }
      }
    });
    return;
  }
  // Many tokens: expand a tile of rows (about 2 MB of fp32), one GEMM per tile.
  const int64_t tile = std::clamp<int64_t>((int64_t(1) << 19) / std::max<int64_t>(cols, 1), 16,
                                           1024);
  auto xt = torch::from_blob(const_cast<float*>(x), {T, cols}, torch::kFloat32).t();
  torch::Tensor zt = e2 ? torch::from_blob(const_cast<float*>(z), {T, cols2}, torch::kFloat32).t()
               : torch::Tensor();
  auto w = torch::empty({std::min(tile, rows), cols}, torch::kFloat32);
  torch::Tensor w2 = e2 ? torch::empty({std::min(tile, rows), cols2}, torch::kFloat32) : torch::Tensor();
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t r = std::min(tile, rows - r0);
    float* wp = w.data_ptr<float>();
    float* w2p = e2 ? w2.data_ptr<float>() : nullptr;
    at::parallel_for(0, r, 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        e.expand(r0 + i, wp + i * cols);
        if (e2) e2->expand(r0 + i, w2p + i * cols2);
      }
    });
    auto o = torch::from_blob(out + r0 * T, {r, T}, torch::kFloat32);
    if (bias) {
      auto b = torch::from_blob(const_cast<float*>(bias + r0), {r, 1}, torch::kFloat32);
      at::addmm_out(o, b.expand({r, T}), w.narrow(0, 0, r), xt);
    } else {
      at::mm_out(o, w.narrow(0, 0, r), xt);
    }
    if (e2) o.addmm_(w2.narrow(0, 0, r), zt);
  }
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

torch::Tensor as_input(const torch::Tensor& x, int64_t d_in) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == d_in, "sparse_linear: input of shape ", x.sizes(),
              " does not fit ", d_in, " input features");
  return x.to(torch::kFloat32).contiguous();
}

template <class E>
torch::Tensor run(const E& e, int64_t d_out, int64_t d_in, const torch::Tensor& x_in,
                  const c10::optional<torch::Tensor>& bias_in, const Factors& f) {
  auto x = as_input(x_in, d_in);
  const int64_t T = x.size(0);
  torch::Tensor bias;
  if (bias_in.has_value()) {
    TORCH_CHECK(bias_in->numel() == d_out, "sparse_linear: bias has ", bias_in->numel(),
                " values for ", d_out, " outputs");
    bias = bias_in->to(torch::kFloat32).contiguous();
  }
  auto yt = torch::empty({d_out, T}, torch::kFloat32);
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  if (f.present) {
    auto zt = torch::empty({f.r, T}, torch::kFloat32);
    rows_times<DenseRows, DenseRows>(f.b, f.r, d_in, x.data_ptr<float>(), T, nullptr, nullptr, 0,
                                     nullptr, zt.data_ptr<float>());
    auto z = zt.t().contiguous();
    rows_times<E, DenseRows>(e, d_out, d_in, x.data_ptr<float>(), T, bp, &f.a, f.r,
                             z.data_ptr<float>(), yt.data_ptr<float>());
  } else {
    rows_times<E, DenseRows>(e, d_out, d_in, x.data_ptr<float>(), T, bp, nullptr, 0, nullptr,
                             yt.data_ptr<float>());
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("validate_nm", &validate_nm);
  mod.def("bitmask_row_offsets", &bitmask_row_offsets);
  mod.def("nm_linear", &nm_linear);
  mod.def("bitmask_linear", &bitmask_linear);
  mod.def("vectorized", &vectorized, "True when built with the AVX2/FMA/F16C paths");
}
