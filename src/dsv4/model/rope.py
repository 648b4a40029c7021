"""Rotary position embedding: interleaved pairs (GPT-J style) on the last `rope_head_dim` dims.

Window-only layers use base `rope_theta` without scaling; compressed layers (ratio 4 and 128) use
`compress_rope_theta` with YaRN frequency interpolation (no attention-temperature factor). The attention output
is de-rotated with the inverse rotation at the query position.
"""

import math

import torch
from torch import nn

from .config import ModelConfig


def yarn_inv_freq(dim: int, base: float, factor: float, original_seq_len: int, beta_fast: int,
                  beta_slow: int) -> torch.Tensor:
    """Inverse frequencies [dim/2]; YaRN ramp between the beta_fast/beta_slow correction dims when
    original_seq_len > 0, plain RoPE otherwise."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if original_seq_len <= 0:
        return inv_freq

    def correction_dim(n_rot: float) -> float:
        return dim * math.log(original_seq_len / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    smooth = 1 - ramp
    return inv_freq / factor * (1 - smooth) + inv_freq * smooth


class Rope(nn.Module):
    """Applies the layer's rotation to the trailing `rope_head_dim` dims of `x` at absolute positions."""

    def __init__(self, config: ModelConfig, compressed: bool):
        super().__init__()
        self.rope_head_dim = config.rope_head_dim
        if compressed:
            args = (config.compress_rope_theta, config.rope_factor, config.original_seq_len)
        else:
            args = (config.rope_theta, 1.0, 0)
        self.args = (config.rope_head_dim, *args, config.beta_fast, config.beta_slow)
        self._inv_freq: torch.Tensor | None = None

    def inv_freq(self) -> torch.Tensor:
        # computed on first use (32 values), not a buffer: a model built on the meta device needs no fix-up
        if self._inv_freq is None:
            self._inv_freq = yarn_inv_freq(*self.args)
        return self._inv_freq

    def forward(self, x: torch.Tensor, positions: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        # x: [b,s,h,d] or [b,s,d]; positions: [s] (shared by the rows) or [b,s] -> same shape as x. Without grad
        # (inference) x itself is rotated and returned: callers pass a temporary they do not read again
        rd = self.rope_head_dim
        angles = positions.to(torch.float32)[..., None] * self.inv_freq().to(positions.device)  # [(b,)s,rd/2]
        if torch.compiler.is_compiling():  # real arithmetic: inductor generates no kernels for complex tensors
            return self._rotated_real(x, angles, inverse)
        rotation = torch.polar(torch.ones_like(angles), -angles if inverse else angles)  # e^{iθ}, as the reference
        if x.ndim == 4:
            rotation = rotation.unsqueeze(-2)
        pairs = torch.view_as_complex(x[..., -rd:].float().unflatten(-1, (-1, 2)))  # (even, odd) dims as complex
        rotated = torch.view_as_real(pairs * rotation).flatten(-2)
        if not torch.is_grad_enabled():  # inference: x is the caller's fresh temporary, rotated in place (a whole
            x[..., -rd:] = rotated.to(x.dtype)  # copy of a prefill chunk's queries per layer saved)
            return x
        return torch.cat([x[..., :-rd], rotated.to(x.dtype)], dim=-1)

    def _rotated_real(self, x: torch.Tensor, angles: torch.Tensor, inverse: bool) -> torch.Tensor:
        # the complex product (even + i·odd)·e^{iθ} written out: even' = even·cos - odd·sin, odd' = even·sin + odd·cos
        rd = self.rope_head_dim
        cos, sin = angles.cos(), angles.sin() * (-1 if inverse else 1)
        if x.ndim == 4:
            cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
        pairs = x[..., -rd:].float().unflatten(-1, (-1, 2))
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
        return torch.cat([x[..., :-rd], rotated.to(x.dtype)], dim=-1)
