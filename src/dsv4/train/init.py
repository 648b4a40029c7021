"""Initial weights for training (`dsv4.model.init` makes test weights that exercise every path, not a start
that trains well): unit-variance projections, residual outputs scaled down with depth, a small lm head (near
uniform first predictions), hyper-connections starting as a plain residual (every stream the mean of the streams
plus the sub-block's output), uniform compressor pooling, a random token -> experts table for the hash layers."""

import math

import torch

from dsv4.model import Transformer

RESIDUAL_OUT = ("attn.wo_b.weight", "w2.weight")  # projections that write into the residual streams


@torch.no_grad()
def init_for_training_(model: Transformer, seed: int = 0) -> Transformer:
    g = torch.Generator().manual_seed(seed)
    c = model.config
    depth_scale = 1 / math.sqrt(2 * c.n_all_layers)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "tid2eid":
            p.copy_(torch.rand(p.size(0), c.n_routed_experts, generator=g).argsort(-1)[:, :p.size(1)])
        elif name == "embed.weight":
            p.copy_(torch.randn(p.shape, generator=g))
        elif name == "head.weight":
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        elif name.endswith("norm.weight"):
            p.fill_(1.0)
        elif leaf.endswith("_fn"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        elif leaf.endswith("_scale"):
            p.fill_(1.0)
        elif leaf.endswith("_base") or leaf in ("attn_sink", "bias", "ape"):
            p.zero_()
        elif name.endswith("compressor.wgate.weight"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 * p.size(-1) ** -0.5)
        else:  # projections: unit-variance outputs, those into the residual scaled with depth
            scale = depth_scale if name.endswith(RESIDUAL_OUT) else 1.0
            p.copy_(torch.randn(p.shape, generator=g) * scale * p.size(-1) ** -0.5)
    return model
