"""Quant-dequant simulation of the deployed formats, and the Walsh-Hadamard transform.

The reference forward pass rounds (in place) the non-RoPE KV dims and the compressed KV entries to FP8 e4m3 with
one power-of-two (UE8M0) scale per 64 dims, and the indexer's queries and keys to MXFP4 (e2m1, one power-of-two
scale per 32 dims) after a Hadamard rotation; the RoPE dims of KV entries stay BF16 (its activations are BF16, and
the deployed cache stores them so). These functions return the rounded values in the input dtype.

Their lookup tables (FP8 and e2m1 decoding, Hadamard matrices) are built once per device and kept in `_TABLES`, a
plain dict rather than `functools.cache`: dynamo looks through a cache wrapper and would trace (and so rebuild) a
table inside a compiled graph on every call, while a tensor already in a global dict enters the graph as a constant
input. A compiled step builds its tables before tracing (`build_tables`).
"""

from collections.abc import Callable

import torch

FP8_MAX = 448.0
FP4_MAX = 6.0
FP4_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # e2m1 magnitudes; code = index (+8 for negative)


def pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    """2 ** ceil(log2(x)) for positive float32 x, exact, as the kernels' fast_round_scale: the bits rounded up to
    the next exponent unless the mantissa is zero (2 integer ops: the rounding runs on every FP8 GEMM input)."""
    bits = x.float().view(torch.int32)
    return ((bits + 0x7FFFFF) & 0x7F800000).view(torch.float32)


def fp8_scales(x: torch.Tensor, block: int, pow2: bool = True) -> torch.Tensor:
    # x: [..., n/block, block] float32 -> scales [..., n/block, 1]
    amax = x.abs().amax(-1, keepdim=True).clamp_min(1e-4)
    s = amax * (1.0 / FP8_MAX)
    return pow2_ceil(s) if pow2 else s


def fp8_round(x: torch.Tensor, block: int = 128, pow2: bool = True) -> torch.Tensor:
    """FP8 e4m3 quant-dequant with one scale per `block` dims of the last axis."""
    shape, dtype = x.shape, x.dtype
    if shape[-1] % block:
        raise ValueError(f"last dim {shape[-1]} is not a multiple of the FP8 block {block}")
    x = x.float().unflatten(-1, (-1, block))
    s = fp8_scales(x, block, pow2)
    q = fp8_to_float((x / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn))
    return (q * s).view(shape).to(dtype)


def kv_entry_round(kv: torch.Tensor, rope_dim: int, rope_bf16: bool = True) -> torch.Tensor:
    """A main KV entry [..., head_dim] in the deployed cache's precision: FP8 (one power-of-two scale per 64) on
    the non-RoPE dims and BF16 on the last `rope_dim` (left as they are with rope_bf16=False)."""
    rope = kv[..., -rope_dim:]
    if rope_bf16:
        rope = rope.to(torch.bfloat16).to(kv.dtype)
    return torch.cat([fp8_round(kv[..., :-rope_dim], 64), rope], dim=-1)


def fp8_to_float(x: torch.Tensor) -> torch.Tensor:
    """float8_e4m3fn values, or their bytes (uint8), -> float32, exact. Large tensors go through a 256-entry table,
    ~5x faster than torch's CPU conversion (~4 ns a value), which dominated reading a batch's window rings; small
    ones (a decode row's GEMM input) through the conversion, one op against the lookup's five."""
    if not torch.compiler.is_compiling() and x.numel() <= 2048:  # (compiled: one form whatever the width)
        return (x if x.dtype == torch.float8_e4m3fn else x.view(torch.float8_e4m3fn)).float()
    codes = x.view(torch.uint8) if x.dtype == torch.float8_e4m3fn else x
    return fp8_table(codes.device).index_select(0, codes.reshape(-1).int()).view(codes.shape)


def fp8_table(device: torch.device) -> torch.Tensor:
    """[256] float32: the value of each float8_e4m3fn byte."""
    return lookup_table(("fp8", device),
                        lambda: torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().to(device))


_TABLES: dict[tuple, torch.Tensor] = {}


def lookup_table(key: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The constant table named `key` (its last element the device), built by `build` on first use and kept."""
    table = _TABLES.get(key)
    if table is None:
        if torch.compiler.is_compiling():  # traced, it would be rebuilt by the graph at every call
            raise RuntimeError(f"lookup table {key} first used inside a compiled graph: build it before tracing "
                               "(dsv4.model.quant.build_tables)")
        table = _TABLES[key] = build()
    return table


def build_tables(device: torch.device, hadamard_sizes: tuple[int, ...] = ()):
    """Builds every lookup table a forward pass on `device` reads (Hadamard matrices of the given sizes, float32),
    outside any trace. Idempotent."""
    fp8_table(device)
    fp4_code_table(device)
    fp4_grid(device)
    fp4_byte_table(device)
    for n in hadamard_sizes:
        hadamard_matrix(n, torch.float32, device)


def fp4_grid_round(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values (already scaled into [-6, 6]) to the nearest e2m1 value, ties to the even code.
    The grid is uniform on each binade, so rounding there is round-half-even at its step: 0.5 up to 2, 1 up
    to 4, 2 up to 6 (an even step count is an even code)."""
    m = x.abs()
    fine, mid, coarse = torch.round(m * 2) * 0.5, torch.round(m), torch.round(m * 0.5) * 2
    return torch.where(m <= 2, fine, torch.where(m <= 4, mid, coarse)).copysign(x)


def fp4_codes(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values (already scaled into [-6, 6]) to e2m1 codes 0..15, round-half-to-even."""
    magnitude = fp4_code_table(x.device)[(fp4_grid_round(x).abs() * 2).long()]
    return (magnitude + 8 * (x < 0).long()).to(torch.uint8)


def fp4_code_table(device: torch.device) -> torch.Tensor:
    """[13] long: the e2m1 code of each magnitude 0..6 indexed by twice the magnitude (-1: not on the grid)."""
    return lookup_table(("fp4_codes", device),
                        lambda: torch.tensor((0, 1, 2, 3, 4, -1, 5, -1, 6, -1, -1, -1, 7), device=device))


def fp4_values(codes: torch.Tensor) -> torch.Tensor:
    value = fp4_grid(codes.device)[(codes & 7).long()]
    return torch.where(codes >= 8, -value, value)


def fp4_grid(device: torch.device) -> torch.Tensor:
    """[8] float32: the e2m1 magnitudes, indexed by code & 7."""
    return lookup_table(("fp4_grid", device), lambda: torch.tensor(FP4_GRID, device=device))


def fp4_byte_table(device: torch.device) -> torch.Tensor:
    """[256,2] float32: the two e2m1 values of each byte (low nibble first): decode unpacks keys every step."""
    def build() -> torch.Tensor:
        byte = torch.arange(256, device=device)
        return fp4_values(torch.stack((byte & 0x0F, byte >> 4), dim=-1)).float()

    return lookup_table(("fp4_bytes", device), build)


def fp4_round(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """MXFP4 quant-dequant: e2m1 values with one power-of-two scale per `block` dims of the last axis."""
    shape, dtype = x.shape, x.dtype
    if shape[-1] % block:
        raise ValueError(f"last dim {shape[-1]} is not a multiple of the FP4 block {block}")
    x = x.float().unflatten(-1, (-1, block))
    s = pow2_ceil(x.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126) * (1.0 / FP4_MAX))
    q = fp4_grid_round((x / s).clamp(-FP4_MAX, FP4_MAX))
    return (q * s).view(shape).to(dtype)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Walsh-Hadamard transform (Sylvester order) over the last dim, scaled by n^-0.5 (orthonormal).
    One matrix product with the cached matrix: a butterfly in tensor ops is log2(n) stages of several ops each
    (25x slower for a decode step's few rows, 3x for a prefill chunk's)."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"Hadamard size {n} is not a power of two")
    dtype = torch.promote_types(x.dtype, torch.float32)
    return (x.to(dtype) @ hadamard_matrix(n, dtype, x.device)).to(x.dtype)


def hadamard_matrix(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The symmetric orthonormal Sylvester-Hadamard matrix of size n (a power of two)."""
    def build() -> torch.Tensor:
        h = torch.ones(1, 1, dtype=torch.float64)
        while h.size(0) < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        return (h * n**-0.5).to(dtype=dtype, device=device)

    return lookup_table(("hadamard", n, dtype, device), build)
