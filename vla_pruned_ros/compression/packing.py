"""Packed storage of pruned weights: never dense zeros on disk.

N:M keeps the N values of every group plus each one's position in its group, in
ceil(log2 M) bits (2:4: 2-bit indices, so fp16 storage is 9/16 of dense). Unstructured keeps the
surviving values in row-major order plus a one-bit-per-weight mask. Both expand back to the exact
same tensor (pruned entries are +0.0).
"""

from __future__ import annotations

import math

import torch

from vla_pruned_ros.compression.patterns import Pattern, parse_pattern


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integers < 2**bits, `bits` each, little-endian into a flat uint8 tensor."""
    flat = values.reshape(-1).to(torch.int32)
    shifts = torch.arange(bits, dtype=torch.int32, device=flat.device)
    stream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8))
    weights = 1 << torch.arange(8, dtype=torch.int32, device=flat.device)
    return (stream.reshape(-1, 8) * weights).sum(1).to(torch.uint8)


_TABLES: dict[int, torch.Tensor] = {}


def _byte_table(bits: int) -> torch.Tensor:
    """(256, 8 // bits) uint8: the fields of every possible byte, lowest bits first."""
    if bits not in _TABLES:
        byte = torch.arange(256, dtype=torch.int32).unsqueeze(1)
        shifts = torch.arange(0, 8, bits, dtype=torch.int32)
        _TABLES[bits] = ((byte >> shifts) & ((1 << bits) - 1)).to(torch.uint8)
    return _TABLES[bits]


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first `count` fields of `bits` bits each (uint8, bits <= 8), by table lookup on
    whole bytes (1, 2, 4, 8 bits) or on the few bytes that hold a whole number of fields (3
    bits: 3 bytes -> 8 fields), never bit by bit: at most one byte per field is allocated."""
    if not 1 <= bits <= 8:
        raise ValueError(f"fields of {bits} bits are not supported (1..8)")
    if math.ceil(count * bits / 8) > packed.numel():
        raise ValueError(f"{packed.numel()} bytes cannot hold {count} fields of {bits} bits")
    flat = packed.reshape(-1)
    if 8 % bits == 0:
        table = _byte_table(bits).to(packed.device)
        per = 8 // bits
        need = math.ceil(count / per)
        return table.index_select(0, flat[:need].to(torch.int32)).reshape(-1)[:count]
    chunk = math.lcm(bits, 8) // 8  # bytes holding a whole number of fields (3 bits: 3 bytes)
    per = chunk * 8 // bits
    need = math.ceil(count / per)
    raw = torch.nn.functional.pad(flat, (0, need * chunk - flat.numel())) if (
        need * chunk > flat.numel()) else flat[: need * chunk]  # fmt: skip
    wide = torch.int32 if chunk <= 3 else torch.int64
    raw = raw.reshape(need, chunk).to(wide)
    word = sum(raw[:, i] << (8 * i) for i in range(chunk))
    shifts = torch.arange(0, per * bits, bits, dtype=wide, device=packed.device)
    fields = (word.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
    return fields.to(torch.uint8).reshape(-1)[:count]


def index_bits(m: int) -> int:
    return max(1, math.ceil(math.log2(m)))


def nm_indices_valid(bits: torch.Tensor, n: int, m: int, d_out: int, d_in: int) -> bool:
    """Whether `bits` (uint8, the right length already checked) names N distinct positions in
    order in every group of M of a (d_out x d_in) weight. Checked in place by the compiled
    kernel where it exists, else a slice of groups at a time: loading must not hold a byte per
    index of a whole layer (22 MB for a 7B MLP row block) next to the model it fills."""
    from vla_pruned_ros.compression.kernels import kernel

    k = kernel()
    if k is None:
        return nm_indices_valid_sliced(bits, n, m, d_out * d_in // m)
    try:
        k.validate_nm(bits.contiguous(), n, m, d_out, d_in)
    except RuntimeError:
        return False
    return True


def nm_indices_valid_sliced(bits: torch.Tensor, n: int, m: int, groups: int,
                            per_slice: int = 1 << 18) -> bool:  # fmt: skip
    """`nm_indices_valid` in pure PyTorch, about `per_slice` groups unpacked at a time."""
    width = index_bits(m)
    per_byte = 8 // math.gcd(8, n * width)  # slices start on a byte boundary
    step = max(per_byte, per_slice // per_byte * per_byte)
    for g0 in range(0, groups, step):
        count = min(step, groups - g0) * n
        first = g0 * n * width // 8
        idx = unpack_bits(bits[first : first + math.ceil(count * width / 8)], width, count)
        idx = idx.reshape(-1, n)
        if bool((idx >= m).any()) or bool((idx[:, 1:] <= idx[:, :-1]).any()):
            return False
    return True


def storage_kind(pattern: Pattern | str) -> str:
    return "nm" if parse_pattern(pattern).kind == "nm" else "bitmask"


def pack(weight: torch.Tensor, pattern: Pattern | str) -> dict[str, torch.Tensor]:
    """`values` plus `indices` (N:M) or `bitmask` (unstructured). Raises if `weight` does not
    satisfy an N:M pattern (more than N non-zeros in a group)."""
    pattern = parse_pattern(pattern)
    w = weight.detach().reshape(weight.shape[0], -1)
    d_out, d_in = w.shape
    if pattern.kind != "nm":
        nonzero = w != 0
        return {"values": w[nonzero].contiguous(), "bitmask": pack_bits(nonzero, 1)}
    n, m = pattern.n, pattern.m
    if d_in % m:
        raise ValueError(f"input dimension {d_in} is not a multiple of M={m} for {pattern}")
    groups = w.reshape(d_out, d_in // m, m)
    nonzero = groups != 0
    if nonzero.numel() and int(nonzero.sum(-1).max()) > n:
        raise ValueError(f"weight is not {pattern} sparse: a group has more than {n} non-zeros")
    # Non-zeros first, by position (stable); groups with fewer than N non-zeros pad with zeros.
    order = torch.argsort((~nonzero).to(torch.int8), dim=-1, stable=True)[..., :n]
    order = torch.sort(order, dim=-1).values
    values = torch.gather(groups, -1, order)
    return {
        "values": values.reshape(d_out, -1).contiguous(),
        "indices": pack_bits(order, index_bits(m)),
    }


def unpack(
    packed: dict[str, torch.Tensor], pattern: Pattern | str, shape: tuple[int, ...]
) -> torch.Tensor:
    """The dense pruned weight of `shape` (zeros where pruned), in the values' dtype."""
    pattern = parse_pattern(pattern)
    values = packed["values"]
    d_out = shape[0]
    d_in = math.prod(shape[1:])
    if pattern.kind != "nm":
        keep = unpack_bits(packed["bitmask"], 1, d_out * d_in).bool()  # on the values' device
        if int(keep.sum()) != values.numel():
            raise ValueError(
                f"bitmask marks {int(keep.sum())} weights but {values.numel()} values are stored"
            )
        out = torch.zeros(d_out * d_in, dtype=values.dtype, device=values.device)
        out[keep.to(values.device)] = values.reshape(-1)
        return out.reshape(shape)
    n, m = pattern.n, pattern.m
    count = d_out * d_in // m * n
    if values.numel() != count:
        raise ValueError(
            f"{pattern} weight of shape {tuple(shape)} needs {count} values, found {values.numel()}"
        )
    idx = unpack_bits(packed["indices"], index_bits(m), count).reshape(d_out, d_in // m, n)
    out = torch.zeros(d_out, d_in // m, m, dtype=values.dtype, device=values.device)
    out.scatter_(-1, idx.to(values.device, torch.int64), values.reshape(d_out, d_in // m, n))
    return out.reshape(shape)


def packed_nbytes(
    shape: tuple[int, ...], pattern: Pattern | str, nnz: int, value_bytes: int
) -> int:
    """Bytes the packed form takes, without building it (for memory reports)."""
    pattern = parse_pattern(pattern)
    numel = math.prod(shape)
    if pattern.kind == "nm":
        kept = numel // pattern.m * pattern.n
        return kept * value_bytes + math.ceil(kept * index_bits(pattern.m) / 8)
    return nnz * value_bytes + math.ceil(numel / 8)
