"""Attention with a sink over keys that differ per query: the gathered form of V4's `sparse_attn`.

Each query attends to keys shared by its chunk (HCA entries, or its window slice) under a mask, plus keys of its
own (tables of `OwnKeys`: its 128 window keys, the CSA entries the indexer picked for it). K = V; the per-head sink
logit joins the softmax denominator only. `sink_attention` is the dense form with shared keys alone.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dsv4 import kernels


@dataclass
class OwnKeys:
    """Each query's own keys as rows of one table: neighbouring queries pick mostly the same entries, so each
    distinct one is held once (rows [u,d] float32) and every query lists its keys by row (index [b,s,t]); mask
    [b,s,t] is False where a query has no key (its index then names any row)."""

    rows: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor

    def logits(self, q32: torch.Tensor) -> torch.Tensor:
        """q [b,s,h,d] float32 -> q·key [b,s,h,t]. The C++ op reads the rows in place; the Python path copies
        every query's keys out first ([b,s,t,d])."""
        b, s, h, d = q32.shape
        op = kernels.op("indexed_logits", q32)
        if op is not None:
            return op(q32.reshape(b * s, h, d), self.rows, self.index.reshape(b * s, -1)).view(b, s, h, -1)
        return torch.einsum("bshd,bstd->bsht", q32, self._keys())

    def values(self, probs: torch.Tensor) -> torch.Tensor:
        """probs [b,s,h,t] float32 -> Σ_t probs·key [b,s,h,d]."""
        b, s, h, t = probs.shape
        op = kernels.op("indexed_values", probs)
        if op is not None:
            return op(probs.reshape(b * s, h, t), self.rows, self.index.reshape(b * s, t)).view(b, s, h, -1)
        return torch.einsum("bsht,bstd->bshd", probs, self._keys())

    @classmethod
    def window(cls, keys: torch.Tensor, q_pos: torch.Tensor, first: int, window: int) -> "OwnKeys":
        """Each query's window as a table over the chunk's window slice: keys [b,k,d] float32 at positions first..,
        queries at q_pos [q] -> index [b,q,window] (the query's last `window` positions, itself last). A chunk's
        queries share a slice of q + window - 1 keys, so scoring the whole slice spends half the products on keys
        no query of it sees; the table scores each query's own."""
        b, k, _ = keys.shape
        local = q_pos[:, None] - first - window + 1 + torch.arange(window, device=keys.device)  # [q,window]
        index = local.clamp_min(0) + (torch.arange(b, device=keys.device) * k)[:, None, None]  # [b,q,window]
        return cls(keys.flatten(0, 1), index, (local >= 0).expand(b, -1, -1))

    def _keys(self) -> torch.Tensor:
        return self.rows.index_select(0, self.index.flatten()).view(*self.index.shape, -1)  # (5x adv. indexing)


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


def gathered_sink_attention(q: torch.Tensor, shared: torch.Tensor | None, shared_mask: torch.Tensor | None,
                            own: OwnKeys | Sequence[OwnKeys] | None, sink: torch.Tensor, scale: float) -> torch.Tensor:
    """q [b,s,h,d]; shared keys [b,k,d] with shared_mask [b,s,k] (or None); each query's own keys, one table or
    several (or None) -> o [b,s,h,d]. Every query must see at least one key."""
    tables = [] if own is None else [own] if isinstance(own, OwnKeys) else list(own)
    q32 = q.float()
    logits = []
    if shared is not None:
        shared32 = shared.float()
        logits.append(torch.einsum("bshd,bkd->bshk", q32, shared32).mul_(scale)
                      .masked_fill_(~shared_mask[:, :, None], float("-inf")))
    logits += [t.logits(q32).mul_(scale).masked_fill_(~t.mask[:, :, None], float("-inf")) for t in tables]
    sink_logit = sink.float()[None, None, :, None].expand(*logits[0].shape[:-1], 1)
    probs = torch.cat(logits + [sink_logit], dim=-1).softmax(dim=-1)  # [b,s,h,k+t+1]
    o, at = None, 0
    if shared is not None:
        at = shared.size(1)
        o = torch.einsum("bshk,bkd->bshd", probs[..., :at], shared32)
    for t in tables:
        part = t.values(probs[..., at:at + t.index.size(-1)].contiguous())
        o = part if o is None else o.add_(part)
        at += t.index.size(-1)
    return o.to(q.dtype)
