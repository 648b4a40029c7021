"""RMSNorm, computed in float32 with a float32 weight (the checkpoint stores it in BF16)."""

import torch
import torch.nn.functional as F
from torch import nn

from dsv4 import kernels


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., d] -> [..., d] in x's dtype
        return F.rms_norm(x.float(), (self.dim,), self.weight, self.eps).to(x.dtype)


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS normalization over the last dim (the per-head query norm). Eager and without autograd, the
    C++ op where it is built (one visit of each row; a compiled graph fuses torch's own)."""
    x32 = x.float()
    op = None if torch.is_grad_enabled() or torch.compiler.is_compiling() else kernels.op("rms_rows", x32)
    if op is not None:
        return op(x32, eps).to(x.dtype)
    return F.rms_norm(x32, (x.size(-1),), None, eps).to(x.dtype)
