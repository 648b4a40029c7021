"""`MTPBlock`: the multi-token-prediction layer (`mtp.N.*`), a window-only `Block` that predicts one more token.

x = e_proj(enorm(embed(next_ids))) broadcast to every stream + h_proj(hnorm(main model streams)), then the
block, then its own hyper head, final norm and the shared lm head.
"""

import torch
from torch import nn

from .block import Block, _param
from .cache import LayerCache
from .config import ModelConfig
from .hyper import hc_head
from .linear import Linear
from .norm import RMSNorm


class MTPBlock(Block):
    def __init__(self, layer_id: int, config: ModelConfig, dtype: torch.dtype):
        super().__init__(layer_id, config, dtype)
        c = config
        self.e_proj = Linear(c.dim, c.dim, dtype, c.rounds_input(c.dtype))
        self.h_proj = Linear(c.dim, c.dim, dtype, c.rounds_input(c.dtype))
        self.enorm = RMSNorm(c.dim, c.norm_eps)
        self.hnorm = RMSNorm(c.dim, c.norm_eps)
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.hc_head_fn = _param(c.hc_mult, c.hc_mult * c.dim)
        self.hc_head_base = _param(c.hc_mult)
        self.hc_head_scale = _param(1)

    def forward(self, h: torch.Tensor, start_pos: int, input_ids: torch.Tensor, cache: LayerCache,
                embed: nn.Embedding, head: nn.Module) -> torch.Tensor:
        # h: [b,s,hc,d] main-model streams at positions start_pos..; input_ids: [b,s] the tokens that follow
        # -> logits [b,s,vocab] float32 for the token after each next token
        e = self.enorm(embed(input_ids))
        x = self.e_proj(e).unsqueeze(2) + self.h_proj(self.hnorm(h))
        x = super().forward(x, start_pos, input_ids, cache)
        x = hc_head(x, self.hc_head_fn, self.hc_head_scale, self.hc_head_base, self.norm_eps, self.hc_eps)
        return head(self.norm(x))
