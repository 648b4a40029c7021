"""Packed byte formats of the deployed KV cache (FlashMLA "MODEL1_FP8Sparse", vLLM `fp8_ds_mla`).

Main KV entry, 584 B (window slots and compressed entries alike):
    [0, 448)    448 non-RoPE dims as FP8 e4m3
    [448, 576)  64 RoPE dims as BF16 (little-endian pairs)
    [576, 583)  7 UE8M0 scales, one per 64 non-RoPE dims: scale = 2 ** (byte - 127)
    583         pad (0)
Indexer key, 68 B (MXFP4):
    [0, 64)     128 e2m1 codes, two per byte, low nibble = even dim
    [64, 68)    4 E8M0 scales, one per 32 dims

Packing quantizes exactly as `dsv4.model.quant` simulates (`fp8_round(x, 64)`, `fp4_round(x, 32)`), so
`unpack(pack(x))` equals the model's simulated values, and values already in the format round-trip exactly.
"""

from dataclasses import dataclass

import torch

from dsv4 import kernels
from dsv4.model.quant import FP4_MAX, FP8_MAX, fp4_byte_table, fp4_codes, fp8_to_float, pow2_ceil


class LayoutError(ValueError):
    pass


@dataclass(frozen=True)
class MainEntryLayout:
    """Byte layout of one main KV entry of `head_dim` dims whose last `rope_dim` stay BF16."""

    head_dim: int = 512
    rope_dim: int = 64
    block: int = 64  # non-RoPE dims per UE8M0 scale

    def __post_init__(self):
        if (self.head_dim - self.rope_dim) % self.block:
            raise LayoutError(f"head_dim - rope_dim = {self.head_dim - self.rope_dim} is not a multiple of "
                              f"block={self.block}")

    @property
    def nope_dim(self) -> int:
        return self.head_dim - self.rope_dim

    @property
    def n_scales(self) -> int:
        return self.nope_dim // self.block

    @property
    def nbytes(self) -> int:
        return self.nope_dim + 2 * self.rope_dim + self.n_scales + 1  # + 1 pad byte: 584 for V4

    def gather(self, pool: torch.Tensor, index: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Entries at `index` [...] along the first axis of a packed pool [n, ..., nbytes] -> [..., ..., head_dim]
        in `dtype`, as one opaque op (see `IndexerKeyLayout.gather`)."""
        _check_width(pool, self.nbytes, "packed main KV pool")
        gather = kernels.op("gather_main_entries", pool) or gather_main_entries
        return gather(pool, index, self.head_dim, self.rope_dim, self.block).to(dtype)

    def pack(self, kv: torch.Tensor) -> torch.Tensor:
        """kv [..., head_dim] float -> uint8 [..., nbytes]."""
        _check_width(kv, self.head_dim, "main KV entry")
        nope = kv[..., : self.nope_dim].float().unflatten(-1, (self.n_scales, self.block))  # [..., 7, 64]
        scale = pow2_ceil(nope.abs().amax(-1, keepdim=True).clamp_min(1e-4) * (1.0 / FP8_MAX))
        q = (nope / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).flatten(-2)
        rope = kv[..., self.nope_dim:].to(torch.bfloat16).contiguous()
        pad = torch.zeros(*kv.shape[:-1], 1, dtype=torch.uint8, device=kv.device)
        return torch.cat([q.view(torch.uint8), rope.view(torch.uint8), e8m0_encode(scale.squeeze(-1)), pad], dim=-1)

    def unpack(self, packed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 [..., nbytes] -> kv [..., head_dim] in `dtype`."""
        _check_width(packed, self.nbytes, "packed main KV entry")
        n, r = self.nope_dim, self.rope_dim
        q = fp8_to_float(packed[..., :n]).unflatten(-1, (self.n_scales, self.block))
        scale = e8m0_decode(packed[..., n + 2 * r: n + 2 * r + self.n_scales]).unsqueeze(-1)
        rope = packed[..., n: n + 2 * r].contiguous().view(torch.bfloat16).float()
        return torch.cat([(q * scale).flatten(-2), rope], dim=-1).to(dtype)


@dataclass(frozen=True)
class IndexerKeyLayout:
    """Byte layout of one MXFP4 indexer key of `dim` dims, one E8M0 scale per `block` dims."""

    dim: int = 128
    block: int = 32

    def __post_init__(self):
        if self.dim % self.block or self.block % 2:
            raise LayoutError(f"dim={self.dim} must be a multiple of an even block={self.block}")

    @property
    def n_scales(self) -> int:
        return self.dim // self.block

    @property
    def nbytes(self) -> int:
        return self.dim // 2 + self.n_scales  # 68 for V4

    def pack(self, key: torch.Tensor) -> torch.Tensor:
        """key [..., dim] float -> uint8 [..., nbytes]."""
        _check_width(key, self.dim, "indexer key")
        x = key.float().unflatten(-1, (self.n_scales, self.block))  # [..., 4, 32]
        scale = pow2_ceil(x.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126) * (1.0 / FP4_MAX))
        codes = fp4_codes((x / scale).clamp(-FP4_MAX, FP4_MAX)).flatten(-2).unflatten(-1, (-1, 2))
        nibbles = codes[..., 0] | (codes[..., 1] << 4)  # [..., dim/2]
        return torch.cat([nibbles, e8m0_encode(scale.squeeze(-1))], dim=-1)

    def unpack(self, packed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 [..., nbytes] -> key [..., dim] in `dtype`."""
        _check_width(packed, self.nbytes, "packed indexer key")
        codes = packed[..., : self.dim // 2].reshape(-1).int()  # int32 lookups: markedly faster than int64 on CPU
        # each byte's two float32 values as one int64, looked up in a flat table: ~4x an embedding of [256,2] rows
        pairs = fp4_byte_table(packed.device).view(torch.int64).view(-1).index_select(0, codes)
        values = pairs.view(torch.float32).view(*packed.shape[:-1], self.n_scales, self.block)
        values.mul_(e8m0_decode(packed[..., self.dim // 2:]).unsqueeze(-1))  # [..., n_scales, 1]
        return values.flatten(-2).to(dtype)

    def gather(self, pool: torch.Tensor, index: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Keys at `index` [...] along the first axis of a packed pool [n, ..., nbytes] -> [..., ..., dim] in
        `dtype`, as one opaque op: a compiled step decodes them with torch's vectorized lookup, as eager does
        (inductor fused the e2m1 decode of every key the indexer scores into scalar 4-lane gathers through the byte
        table: ~40% of a compiled step at 4K, growing with the context)."""
        _check_width(pool, self.nbytes, "packed indexer key pool")
        gather = kernels.op("gather_index_keys", pool) or gather_index_keys
        return gather(pool, index, self.dim, self.block).to(dtype)


def _gathered(pool: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return pool.index_select(0, index.flatten()).view(*index.shape, *pool.shape[1:])


@torch.library.custom_op("dsv4::gather_main_entries", mutates_args=())
def gather_main_entries(pool: torch.Tensor, index: torch.Tensor, head_dim: int, rope_dim: int,
                        block: int) -> torch.Tensor:
    """float32 [*index.shape, ..., head_dim]: the packed main KV entries at `index` of `pool`, decoded."""
    return MainEntryLayout(head_dim, rope_dim, block).unpack(_gathered(pool, index))


@gather_main_entries.register_fake
def _(pool: torch.Tensor, index: torch.Tensor, head_dim: int, rope_dim: int, block: int) -> torch.Tensor:
    return pool.new_empty(*index.shape, *pool.shape[1:-1], head_dim, dtype=torch.float32)


@torch.library.custom_op("dsv4::gather_index_keys", mutates_args=())
def gather_index_keys(pool: torch.Tensor, index: torch.Tensor, dim: int, block: int) -> torch.Tensor:
    """float32 [*index.shape, ..., dim]: the MXFP4 keys at `index` of `pool`, decoded."""
    return IndexerKeyLayout(dim, block).unpack(_gathered(pool, index))


@gather_index_keys.register_fake
def _(pool: torch.Tensor, index: torch.Tensor, dim: int, block: int) -> torch.Tensor:
    return pool.new_empty(*index.shape, *pool.shape[1:-1], dim, dtype=torch.float32)


def e8m0_encode(scale: torch.Tensor) -> torch.Tensor:
    """Power-of-two float32 scales -> uint8 biased exponents (2 ** (byte - 127))."""
    _, exponent = torch.frexp(scale.float())  # scale = 0.5 * 2**exponent
    byte = exponent - 1 + 127
    # (a host read: checked in eager only; a compiled step's values are the eager step's)
    if not torch.compiler.is_compiling() and ((byte < 0) | (byte > 254)).any():
        raise LayoutError(f"scale outside the E8M0 range: min {scale.min().item()}, max {scale.max().item()}")
    return byte.to(torch.uint8)


def e8m0_decode(byte: torch.Tensor) -> torch.Tensor:
    """uint8 biased exponents -> float32 scales."""
    bits = byte.int() << 23  # the byte as a float32 exponent field: 2 ** (byte - 127) for bytes 1..254
    return bits.view(torch.float32).where(byte > 0, 2.0**-127)


def _check_width(x: torch.Tensor, width: int, what: str):
    if x.shape[-1] != width:
        raise LayoutError(f"{what}: last dim must be {width}; got shape {tuple(x.shape)}")
