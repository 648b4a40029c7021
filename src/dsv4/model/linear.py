"""`Linear`: y = x Wᵀ with the weight held dequantized in the compute dtype.

Weights stored as FP8/FP4 in the checkpoint are multiplied in the reference by FP8 GEMMs whose activations are
first rounded to FP8 (1x128 blocks, power-of-two scales). `act_quant=True` simulates that rounding of `x`; the
modules set it from the weight's format (`ModelConfig.rounds_input`), as the reference's linear() decides it.

`compact_()` keeps a float32 weight in BF16 where BF16 holds every value exactly (a dequantized FP8, FP4 or BF16
weight does): the same values in half the bytes, which a decode step (one row per request, bound by streaming the
weights) reads twice as fast through the C++ kernel `linear_bf16`; larger inputs multiply a float32 copy.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dsv4 import kernels

from .quant import fp8_round

SMALL_ROWS = 16  # inputs of at most this many rows go through the streaming kernel (decode batches)


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype | None = None,
                 act_quant: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.act_quant = act_quant and in_features % 128 == 0
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype), requires_grad=False)
        self.compute_dtype = dtype or torch.get_default_dtype()  # the weight's dtype, unless compact_ changed it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        return linear(self.prepare(x), self.weight)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the product sees it: FP8-rounded (act_quant) and in the compute dtype."""
        if self.act_quant:
            x = fp8_round(x, 128)
        if x.dtype != self.compute_dtype:  # (a same-dtype .to() is still a dispatched op: decode counts them)
            x = x.to(self.compute_dtype)
        return x

    def compact_(self) -> bool:
        """Holds a float32 weight in BF16 when that keeps every value exactly; True if it did."""
        w = self.weight
        if w.dtype != torch.float32 or w.requires_grad:
            return False
        half = w.detach().to(torch.bfloat16)
        if not torch.equal(half.float(), w):
            return False
        self.weight = nn.Parameter(half, requires_grad=False)
        return True


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., in] · weightᵀ, a compact (BF16) weight with a float32 x included -> [..., out] in x's dtype."""
    if weight.dtype == x.dtype:
        return F.linear(x, weight)
    rows = x.reshape(-1, x.size(-1))
    stream = kernels.op("linear_bf16", x) if weight.dtype == torch.bfloat16 and x.dtype == torch.float32 else None
    if stream is not None and rows.size(0) <= SMALL_ROWS:
        return stream(rows, weight).view(*x.shape[:-1], weight.size(0))
    return F.linear(x, weight.to(x.dtype))
