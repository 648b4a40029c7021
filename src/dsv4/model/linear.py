"""`Linear`: y = x Wᵀ with the weight held dequantized in the compute dtype.

Weights stored as FP8/FP4 in the checkpoint are multiplied in the reference by FP8 GEMMs whose activations are
first rounded to FP8 (1x128 blocks, power-of-two scales). `act_quant=True` simulates that rounding of `x`; the
modules set it from the weight's format (`ModelConfig.rounds_input`), as the reference's linear() decides it.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .quant import fp8_round


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype | None = None,
                 act_quant: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.act_quant = act_quant and in_features % 128 == 0
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        return F.linear(self.prepare(x), self.weight)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the product sees it: FP8-rounded (act_quant) and in the weight's dtype."""
        if self.act_quant:
            x = fp8_round(x, 128)
        if x.dtype != self.weight.dtype:  # (a same-dtype .to() is still a dispatched op: decode counts them)
            x = x.to(self.weight.dtype)
        return x
