"""Attention with a sink over keys that differ per query: the gathered form of V4's `sparse_attn`.

Each query attends to keys shared by its chunk (its window slice, HCA entries) under a mask, plus keys of its
own (the CSA entries the indexer picked for it, gathered). K = V; the per-head sink logit joins the softmax
denominator only. `sink_attention` is the dense form with shared keys alone.
"""

import torch


def sink_attention(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor, sink: torch.Tensor,
                   scale: float, chunk: int = 256) -> torch.Tensor:
    """q [b,s,h,d], kv [b,k,d] (K = V), mask [b,s,k] bool, sink [h] -> o [b,s,h,d].
    Queries are processed `chunk` at a time, bounding the logits to [b,h,chunk,k]."""
    kv32 = kv.float()
    out = []
    for i in range(0, q.size(1), chunk):
        logits = torch.einsum("bshd,bkd->bhsk", q[:, i:i + chunk].float(), kv32) * scale
        logits = logits.masked_fill(~mask[:, None, i:i + chunk], float("-inf"))
        sink_logit = sink.float()[None, :, None, None].expand(*logits.shape[:-1], 1)
        probs = torch.cat([logits, sink_logit], dim=-1).softmax(dim=-1)[..., :-1]
        out.append(torch.einsum("bhsk,bkd->bshd", probs, kv32))
    return torch.cat(out, dim=1).to(q.dtype)


def gathered_sink_attention(q: torch.Tensor, shared: torch.Tensor, shared_mask: torch.Tensor,
                            own: torch.Tensor | None, own_mask: torch.Tensor | None, sink: torch.Tensor,
                            scale: float) -> torch.Tensor:
    """q [b,s,h,d]; shared keys [b,k,d] with shared_mask [b,s,k]; each query's own keys own [b,s,t,d] with
    own_mask [b,s,t] (or None) -> o [b,s,h,d]. Every query must see at least one key."""
    q32, shared32 = q.float(), shared.float()
    k = shared.size(1)
    logits = [torch.einsum("bshd,bkd->bshk", q32, shared32).mul_(scale)
              .masked_fill_(~shared_mask[:, :, None], float("-inf"))]
    if own is not None:
        own32 = own.float()
        logits.append(torch.einsum("bshd,bstd->bsht", q32, own32).mul_(scale)
                      .masked_fill_(~own_mask[:, :, None], float("-inf")))
    sink_logit = sink.float()[None, None, :, None].expand(*logits[0].shape[:-1], 1)
    probs = torch.cat(logits + [sink_logit], dim=-1).softmax(dim=-1)  # [b,s,h,k+t+1]
    o = torch.einsum("bshk,bkd->bshd", probs[..., :k], shared32)
    if own is not None:
        o += torch.einsum("bsht,bstd->bshd", probs[..., k:-1], own32)
    return o.to(q.dtype)
