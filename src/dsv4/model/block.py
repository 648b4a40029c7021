"""`Block`: attention and MoE, each entered and left through a hyper-connection site."""

import torch
from torch import nn

from .attention.attention import Attention
from .cache import LayerCache
from .config import ModelConfig
from .hyper import hc_post, hc_pre
from .moe import MoE
from .norm import RMSNorm


class Block(nn.Module):
    def __init__(self, layer_id: int, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        c = config
        self.norm_eps, self.hc_eps, self.hc_iters = c.norm_eps, c.hc_eps, c.hc_sinkhorn_iters
        self.attn = Attention(layer_id, c, dtype)
        self.ffn = MoE(layer_id, c, dtype)
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        mix, hc_dim = (2 + c.hc_mult) * c.hc_mult, c.hc_mult * c.dim
        for site in ("attn", "ffn"):
            self.register_parameter(f"hc_{site}_fn", _param(mix, hc_dim))
            self.register_parameter(f"hc_{site}_base", _param(mix))
            self.register_parameter(f"hc_{site}_scale", _param(3))

    def forward(self, x: torch.Tensor, start_pos: int | torch.Tensor, input_ids: torch.Tensor,
                cache: LayerCache) -> torch.Tensor:
        # x: [b,s,hc,d] -> [b,s,hc,d]; start_pos: int, or per-row positions [b] (s == 1)
        h, post, comb = self._pre(x, "attn")
        x = hc_post(self.attn(self.attn_norm(h), start_pos, cache), x, post, comb)
        h, post, comb = self._pre(x, "ffn")
        return hc_post(self.ffn(self.ffn_norm(h), input_ids), x, post, comb)

    def _pre(self, x: torch.Tensor, site: str):
        fn, scale, base = (getattr(self, f"hc_{site}_{k}") for k in ("fn", "scale", "base"))
        return hc_pre(x, fn, scale, base, self.norm_eps, self.hc_iters, self.hc_eps)


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, dtype=torch.float32), requires_grad=False)
