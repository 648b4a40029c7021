"""Weight formats of the released checkpoint: encode and decode.

- FP8: `float8_e4m3fn` weight [out, in] with one `float8_e8m0fnu` (power-of-two) scale per 128x128 block,
  scale shape [ceil(out/128), ceil(in/128)].
- FP4 (routed experts): e2m1 codes packed two per byte along `in` (low nibble first), stored as int8
  [out, in/2] (or `float4_e2m1fn_x2`), with one `float8_e8m0fnu` scale per 32 inputs, scale shape [out, in/32].
"""

import torch
import torch.nn.functional as F

from .quant import FP4_MAX, FP8_MAX, fp4_codes, fp4_values, pow2_ceil

FP8_BLOCK = 128
FP4_BLOCK = 32


def _blocked(w: torch.Tensor, block: int) -> torch.Tensor:
    # [out, in] -> [ceil(out/b), ceil(in/b), b, b], zero padded
    out_dim, in_dim = w.shape
    w = F.pad(w, (0, -in_dim % block, 0, -out_dim % block))
    return w.unflatten(0, (-1, block)).unflatten(-1, (-1, block)).transpose(1, 2)


def fp8_encode(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (float8_e4m3fn [out, in], float8_e8m0fnu [ceil(out/128), ceil(in/128)])."""
    blocks = _blocked(w.float(), FP8_BLOCK)
    amax = blocks.abs().amax((-1, -2)).clamp_min(1e-4)
    scale = pow2_ceil(amax * (1.0 / FP8_MAX))
    q = (blocks / scale[..., None, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    q = q.transpose(1, 2).flatten(2, 3).flatten(0, 1)[: w.shape[0], : w.shape[1]]
    return q.contiguous(), scale.to(torch.float8_e8m0fnu)


def fp8_decode(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    out_dim, in_dim = q.shape
    s = scale.float().repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)
    return q.float() * s[:out_dim, :in_dim]


def fp4_encode(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (int8 [out, in/2] packed e2m1, float8_e8m0fnu [out, in/32])."""
    out_dim, in_dim = w.shape
    if in_dim % FP4_BLOCK:
        raise ValueError(f"FP4 weight input dim {in_dim} is not a multiple of {FP4_BLOCK}")
    blocks = w.float().view(out_dim, -1, FP4_BLOCK)
    scale = pow2_ceil(blocks.abs().amax(-1).clamp_min(FP4_MAX * 2.0**-126) * (1.0 / FP4_MAX))
    codes = fp4_codes((blocks / scale[..., None]).clamp(-FP4_MAX, FP4_MAX)).view(out_dim, in_dim // 2, 2)
    packed = codes[..., 0] | (codes[..., 1] << 4)
    return packed.view(torch.int8), scale.to(torch.float8_e8m0fnu)


def fp4_decode(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    p = packed.view(torch.uint8)
    codes = torch.stack((p & 0x0F, p >> 4), dim=-1).flatten(-2)  # [out, in]
    return fp4_values(codes) * scale.float().repeat_interleave(FP4_BLOCK, dim=-1)
