"""Manifold-constrained hyper-connections (mHC): the residual is `hc_mult` streams [b,s,hc,d].

Each block site (attention, FFN) computes from the RMS-normalized flattened streams 2·hc + hc² mixes:
pre = sigmoid(·) + eps collapses the streams into the sub-block input, post = 2·sigmoid(·) spreads the
sub-block output back, and comb (softmax rows, then Sinkhorn-Knopp row/column normalization, ≈ doubly
stochastic) mixes the old streams: new_k = post_k · out + Σ_j comb[j,k] · old_j.
"""

import torch
import torch.nn.functional as F

from dsv4 import kernels


def hc_mixes(x: torch.Tensor, fn: torch.Tensor, norm_eps: float) -> torch.Tensor:
    # x: [b,s,hc,d] -> mixes [b,s,m] float32, from the RMS-normalized flattened streams
    x = x.flatten(2).float()
    return F.linear(x, fn.float()) * torch.rsqrt(x.square().mean(-1, keepdim=True) + norm_eps)


def sinkhorn_split(mixes: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, hc: int, iters: int,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixes [b,s,(2+hc)·hc] -> pre [b,s,hc], post [b,s,hc], comb [b,s,hc,hc] (rows j = input stream)."""
    pre = torch.sigmoid(mixes[..., :hc] * scale[0] + base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[..., hc:2 * hc] * scale[1] + base[hc:2 * hc])
    comb = (mixes[..., 2 * hc:] * scale[2] + base[2 * hc:]).unflatten(-1, (hc, hc))
    comb = comb.softmax(dim=-1) + eps
    if torch.compiler.is_compiling():  # plain sums: inductor fuses all the iterations into one kernel (a baddbmm
        m = comb / (comb.sum(dim=-2, keepdim=True) + eps)  # stays an external call each)
        for _ in range(iters - 1):
            m = m / (m.sum(dim=-1, keepdim=True) + eps)
            m = m / (m.sum(dim=-2, keepdim=True) + eps)
        return pre, post, m
    sinkhorn = None if torch.is_grad_enabled() else kernels.op("sinkhorn", comb)  # (the C++ op has no backward)
    if sinkhorn is not None:  # every iteration of a matrix in one C++ pass: the values of the ops below, ~2x faster
        return pre, post, sinkhorn(comb.reshape(-1, hc, hc), iters, eps).view(comb.shape)
    # Each normalization divides by (row or column sums + eps); the sums + eps come from one batched product with
    # a ones vector (baddbmm), 2 tensor ops per half-iteration instead of 3, with bit-identical sums. Decode
    # is bound by the number of ops, and these 20 iterations run at every hyper-connection site.
    m = comb.reshape(-1, hc, hc)
    n = m.size(0)
    ones_col, ones_row = m.new_ones(n, hc, 1), m.new_ones(n, 1, hc)
    eps_col, eps_row = m.new_full((n, hc, 1), eps), m.new_full((n, 1, hc), eps)
    m = m / torch.baddbmm(eps_row, ones_row, m)  # column sums
    for _ in range(iters - 1):
        m = m / torch.baddbmm(eps_col, m, ones_col)  # row sums
        m = m / torch.baddbmm(eps_row, ones_row, m)
    return pre, post, m.view(comb.shape)


def hc_pre(x: torch.Tensor, fn, scale, base, norm_eps: float, iters: int, hc_eps: float):
    """x [b,s,hc,d] -> (sub-block input [b,s,d], post [b,s,hc], comb [b,s,hc,hc])."""
    mixes = hc_mixes(x, fn, norm_eps)
    pre, post, comb = sinkhorn_split(mixes, scale.float(), base.float(), x.size(2), iters, hc_eps)
    y = (pre.unsqueeze(-1) * x.float()).sum(dim=2)
    return y.to(x.dtype), post, comb


def hc_post(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """out [b,s,d], residual [b,s,hc,d] -> new streams [b,s,hc,d]."""
    mixed = torch.matmul(comb.transpose(-1, -2), residual.float())  # Σ_j comb[j,k] · old_j, no [hc,hc,d] temporary
    return (post.unsqueeze(-1) * out.float().unsqueeze(-2) + mixed).to(residual.dtype)


def hc_head(x: torch.Tensor, fn, scale, base, norm_eps: float, hc_eps: float) -> torch.Tensor:
    """Final collapse of the streams (no Sinkhorn): x [b,s,hc,d] -> [b,s,d]."""
    mixes = hc_mixes(x, fn, norm_eps)
    pre = torch.sigmoid(mixes * scale.float() + base.float()) + hc_eps
    return (pre.unsqueeze(-1) * x.float()).sum(dim=2).to(x.dtype)
