"""The training forward: the same `dsv4.model` modules and weights as inference, run differentiably over whole
sequences from position 0 (no cache).

Inference (`Transformer.forward`) runs under `inference_mode` and writes into caches; here every query sees the
same keys through dense masks instead: its window (blocked: 128 queries against the 256 keys that can hold their
windows), and in compressed layers the entries complete for it (HCA: all; CSA: the indexer's top-k, or in the dense
warm-up all of them). The format simulation (FP8 KV, MXFP4 indexer keys and queries) rounds the forward values
exactly as inference does and passes gradients straight through. The lightning indexer sees detached inputs and
learns only from its KL loss towards the main attention's distribution over the compressed entries; its top-k
carries no gradient.

A batch whose rows share a prefix (agent episodes: the system prompt and tool schemas are ~80% of each) runs it once:
`prefix` tokens at batch 1, whose per-layer `Past` (its last window of keys, its compressed entries, each
compressor's last block) the rest of every row attends to, expanded. Causality makes this the same forward as the
whole batch, and the same gradients (the prefix's gradient is the sum over rows); only the logits of the rows' own
positions are made.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dsv4.model import Transformer
from dsv4.model.attention.attention import Attention
from dsv4.model.attention.compressor import Compressor
from dsv4.model.attention.indexer import Indexer, entry_visible, index_scores, ranked
from dsv4.model.block import Block
from dsv4.model.hyper import hc_head, hc_post
from dsv4.model.mtp import MTPBlock
from dsv4.model.norm import rms_normalize
from dsv4.model.quant import hadamard_matrix


class _Simulated(torch.autograd.Function):
    """Forward: `value`, what the inference module's own format simulation made of x (computed without gradient,
    so the training forward rounds exactly as inference does, whatever the rules); backward: identity to x
    (rounding has no useful gradient: straight through)."""

    @staticmethod
    def forward(ctx, x, value):
        return value

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def simulated(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return _Simulated.apply(x, value)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """quant.hadamard, with the cached matrix cloned when an inference-mode call made it (autograd cannot save an
    inference tensor for the backward pass)."""
    m = hadamard_matrix(x.size(-1), torch.float32, x.device)
    return x.float() @ (m.clone() if m.is_inference() else m)


# A shared prefix's length must be a multiple of this: the window and both compression ratios, so the rows' own
# positions start a window block and a compressor block
PREFIX_ALIGN = 128


@dataclass
class ForwardStats:
    """What one training forward measured besides the logits."""

    weight: int = 1  # how many rows the queries being run stand for (a shared prefix: the batch size)
    kl: dict = field(default_factory=dict)  # CSA attention -> [weighted Σ KL, weighted queries]

    def add_kl(self, layer: Attention, total: torch.Tensor, count: torch.Tensor) -> None:
        s, n = self.kl.get(layer, (0.0, 0))
        self.kl[layer] = (s + total * self.weight, n + count * self.weight)

    @property
    def index_kl(self) -> list[torch.Tensor]:
        """Per CSA layer, the KL averaged over its queries (grad to the indexer)."""
        return [s / n.clamp_min(1) for s, n in self.kl.values()]


@dataclass
class TrainOutput:
    logits: torch.Tensor  # [b,s-start,vocab] float32: the token after each position from `start` on
    mtp_logits: list[torch.Tensor]  # per MTP depth k: [b,s-start-1-k,vocab], the token k+2 after each position
    stats: ForwardStats
    start: int = 0  # the first position with logits (the shared prefix's length)


@dataclass
class Compressed:
    entries: torch.Tensor  # [b,n,d] finished entries
    block: tuple[torch.Tensor, torch.Tensor] | None  # the last complete block's (kv, score) [b,r,coff·d] (overlap)


@dataclass
class Past:
    """One attention layer's view of a shared prefix (batch 1; its rows are expanded to the batch)."""

    length: int
    kv_tail: torch.Tensor  # [1,w,d] the last window of keys
    comp: Compressed | None = None
    index: Compressed | None = None


def shared_prefix(ids: torch.Tensor, n_mtp: int) -> int:
    """The longest prefix every row shares that train_forward can run once: a multiple of PREFIX_ALIGN that leaves
    each MTP depth's next tokens inside the shared part."""
    same = (ids == ids[:1]).all(dim=0)
    common = int(same.long().cumprod(0).sum())
    return max(0, common - n_mtp) // PREFIX_ALIGN * PREFIX_ALIGN if ids.size(0) > 1 else 0


def train_forward(model: Transformer, ids: torch.Tensor, sparse: bool = True, prefix: int = 0) -> TrainOutput:
    """ids [b,s] at positions 0..s-1 -> logits of every position from `prefix` on (and of the MTP layers).
    `sparse=False` is the indexer's dense warm-up: CSA queries attend to every complete entry. `prefix` (a multiple
    of PREFIX_ALIGN, see `shared_prefix`) tokens that every row shares are run once."""
    if ids.ndim != 2:
        raise ValueError(f"ids must be [batch, seq]; got shape {tuple(ids.shape)}")
    c, stats = model.config, ForwardStats()
    n_mtp = len(model.mtp)
    if prefix:
        if prefix % PREFIX_ALIGN or prefix + n_mtp >= ids.size(1):
            raise ValueError(f"prefix={prefix} must be a multiple of {PREFIX_ALIGN} below the length "
                             f"{ids.size(1)} - {n_mtp}")
        if not (ids[:, :prefix + n_mtp] == ids[:1, :prefix + n_mtp]).all():
            raise ValueError(f"the rows differ within the first {prefix + n_mtp} tokens: not a shared prefix")
    b = ids.size(0)
    pasts: list[Past | None] = [None] * len(model.layers)
    if prefix:
        stats.weight = b
        h_pre, pasts = _stack(model.layers, _streams(model, ids[:1, :prefix]), ids[:1, :prefix], sparse, stats, pasts)
        stats.weight = 1
    h, _ = _stack(model.layers, _streams(model, ids[:, prefix:]), ids[:, prefix:], sparse, stats, pasts)
    mtp_logits, streams = [], h
    for depth, mtp in enumerate(model.mtp):
        past = None
        if prefix:
            stats.weight = b
            h_pre, past = mtp_forward(mtp, h_pre, ids[:1, depth + 1:prefix + depth + 1], model, stats, None)
            stats.weight = 1
        streams, _ = mtp_forward(mtp, streams[:, :-1], ids[:, prefix + depth + 1:], model, stats, past)
        x = hc_head(streams, mtp.hc_head_fn, mtp.hc_head_scale, mtp.hc_head_base, c.norm_eps, c.hc_eps)
        mtp_logits.append(model.head(mtp.norm(x)))
    return TrainOutput(model.logits(h), mtp_logits, stats, prefix)


def _streams(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    return model.embed(ids).unsqueeze(2).repeat(1, 1, model.config.hc_mult, 1)  # [b,s,hc,d]


def _stack(blocks, h: torch.Tensor, ids: torch.Tensor, sparse: bool, stats: ForwardStats, pasts: list):
    out = []
    for block, past in zip(blocks, pasts, strict=True):
        h, past = block_forward(block, h, ids, sparse, stats, past)
        out.append(past)
    return h, out


def mtp_forward(mtp: MTPBlock, h: torch.Tensor, next_ids: torch.Tensor, model: Transformer,
                stats: ForwardStats, past: Past | None = None) -> tuple[torch.Tensor, Past]:
    # h [b,s,hc,d] main streams, next_ids [b,s] the tokens after them -> the MTP block's streams [b,s,hc,d]
    e = mtp.enorm(model.embed(next_ids))
    x = mtp.e_proj(e).unsqueeze(2) + mtp.h_proj(mtp.hnorm(h))
    return block_forward(mtp, x, next_ids, True, stats, past)


def block_forward(block: Block, x: torch.Tensor, ids: torch.Tensor, sparse: bool, stats: ForwardStats,
                  past: Past | None = None) -> tuple[torch.Tensor, Past]:
    # x [b,s,hc,d] -> [b,s,hc,d], and the block's view of x as a prefix
    h, post, comb = block._pre(x, "attn")
    o, past = attention_forward(block.attn, block.attn_norm(h), sparse, stats, past)
    x = hc_post(o, x, post, comb)
    h, post, comb = block._pre(x, "ffn")
    return hc_post(block.ffn(block.ffn_norm(h), ids), x, post, comb), past


def attention_forward(attn: Attention, x: torch.Tensor, sparse: bool, stats: ForwardStats,
                      past: Past | None = None) -> tuple[torch.Tensor, Past]:
    """x [b,s,dim] at positions past.length.. (0.. without a past) -> [b,s,dim], and the past that a continuation
    of x attends to."""
    b, s, _ = x.shape
    start = past.length if past else 0
    positions = torch.arange(start, start + s, device=x.device)
    q, kv, qr = _qkv(attn, x, positions)
    prev_keys = past.kv_tail.expand(b, -1, -1) if past else None
    win_logits, win_keys = window_logits(q, kv, attn.window_size, attn.softmax_scale, prev_keys)
    entries = comp_logits = comp = index = None
    if attn.ratio:
        comp = compress(attn.compressor, x, past.comp if past else None)
        entries = comp.entries  # [b,n,d]
        mask = entry_visible(positions, entries.size(1), attn.ratio).expand(b, -1, -1)  # [b,s,n]
        if attn.ratio == 4:
            scores, index = indexer_scores(attn.indexer, x.detach(), qr.detach(), positions,
                                           past.index if past else None)  # [b,s,n]
            if sparse:
                mask = mask & top_k_mask(scores, mask, attn.indexer.index_topk)
        comp_logits = torch.einsum("bshd,bnd->bshn", q.float(), entries.float()) * attn.softmax_scale
        comp_logits = comp_logits.masked_fill(~mask[:, :, None], float("-inf"))
    sink = attn.attn_sink.float()[None, None, :, None].expand(b, s, -1, 1)
    parts = [win_logits] + ([comp_logits] if comp_logits is not None else [])
    probs = torch.cat(parts + [sink], dim=-1).softmax(dim=-1)  # [b,s,h,2w(+n)+1]
    w2 = win_logits.size(-1)
    o = window_values(probs[..., :w2], win_keys, s)
    if entries is not None:
        comp_probs = probs[..., w2:-1]
        o = o + torch.einsum("bshn,bnd->bshd", comp_probs, entries.float())
        if attn.ratio == 4:
            stats.add_kl(attn, *index_kl(scores, comp_probs.detach(), mask))
    tail = (torch.cat([prev_keys, kv], dim=1) if past else kv)[:, -attn.window_size:]
    return attn._out(o.to(q.dtype), positions), Past(start + s, tail, comp, index)


def _qkv(attn: Attention, x: torch.Tensor, positions: torch.Tensor):
    # Attention._qkv with the FP8 simulation passed straight through: q [b,s,h,d], kv [b,s,d], qr [b,s,r]
    qr = attn.q_norm(attn.wq_a(x))
    q = rms_normalize(attn.wq_b(qr).unflatten(-1, (attn.n_heads, attn.head_dim)), attn.eps)
    q = attn.rope(q, positions)
    kv = attn.rope(attn.kv_norm(attn.wkv(x)), positions)
    if attn.simulate:
        with torch.no_grad():
            value = attn._qkv(x.detach(), positions)[1]
        kv = simulated(kv, value)
    return q, kv, qr


def window_logits(q: torch.Tensor, kv: torch.Tensor, window: int, scale: float, prev: torch.Tensor | None = None):
    """q [b,s,h,d], kv [b,s,d] -> logits [b,s,h,2w] of each query against the keys of its block and the block
    before (masked to its window), and those keys [b,s/w,2w,d] (s padded up to a multiple of w). `prev` [b,w,d]:
    the block before position 0 (a prefix's last window), absent when x starts the sequence."""
    b, s, h, d = q.shape
    nb = -(-s // window)
    pad = nb * window - s
    qb = F.pad(q.float(), (0, 0, 0, 0, 0, pad)).view(b, nb, window, h, d)
    kb = F.pad(kv.float(), (0, 0, 0 if prev is not None else window, pad))
    if prev is not None:
        kb = torch.cat([prev.float(), kb], dim=1)
    kb = kb.view(b, nb + 1, window, d)
    keys = torch.cat([kb[:, :-1], kb[:, 1:]], dim=2)  # [b,nb,2w,d]: block j-1, block j
    logits = torch.einsum("bnqhd,bnkd->bnqhk", qb, keys) * scale
    q_pos = torch.arange(window)[:, None] + window  # within the pair of blocks
    dist = q_pos - torch.arange(2 * window)[None, :]  # [w,2w]
    first = torch.zeros(nb, 1, 1, dtype=torch.bool)
    first[0] = prev is None  # block -1 does not exist
    k_real = ~(first & (torch.arange(2 * window) < window))  # [nb,1,2w]
    mask = (dist >= 0) & (dist < window) & k_real  # [nb,w,2w]
    logits = logits.masked_fill(~mask[None, :, :, None, :].to(logits.device), float("-inf"))
    return logits.reshape(b, nb * window, h, 2 * window)[:, :s], keys


def window_values(probs: torch.Tensor, keys: torch.Tensor, s: int) -> torch.Tensor:
    # probs [b,s,h,2w] over the window keys [b,nb,2w,d] -> o [b,s,h,d]
    b, _, h, w2 = probs.shape
    nb = keys.size(1)
    pb = F.pad(probs, (0, 0, 0, 0, 0, nb * w2 // 2 - s)).view(b, nb, w2 // 2, h, w2)
    return torch.einsum("bnqhk,bnkd->bnqhd", pb, keys).reshape(b, -1, h, keys.size(-1))[:, :s]


def compress(comp: Compressor, x: torch.Tensor, past: Compressed | None = None) -> Compressed:
    """Compressor.forward with no state: x [b,s,dim] from position 0, or after a prefix (`past`, its length a
    multiple of the ratio) -> every entry so far [b,n0+s//ratio,head_dim], finished (normalized, rotated,
    simulated) as the cache holds them, and the last complete block a continuation pools with."""
    b, s, _ = x.shape
    r = comp.ratio
    n = s // r
    n0 = past.entries.size(1) if past else 0
    kv = comp.wkv(x.float())[:, :n * r]  # [b,n·r,coff·d]
    score = comp.wgate(x.float())[:, :n * r] + comp.ape[torch.arange(n * r, device=x.device) % r]
    kv, score = kv.unflatten(1, (n, r)), score.unflatten(1, (n, r))
    prev = None
    if comp.overlap and past:
        prev = tuple(t.expand(b, -1, -1) for t in past.block)
    elif comp.overlap:  # before block 0 the state holds an empty block: zero kv, -inf scores
        prev = (kv.new_zeros(b, r, kv.size(-1)), kv.new_full((b, r, kv.size(-1)), float("-inf")))
    if not n:
        return Compressed(past.entries.expand(b, -1, -1) if past else x.new_zeros(b, 0, comp.head_dim), prev)
    block = (kv[:, -1], score[:, -1]) if comp.overlap else None
    entries = _finished(comp, comp._pool(kv, score, prev).to(x.dtype), n0)  # [b,n,d]
    if past:
        entries = torch.cat([past.entries.expand(b, -1, -1), entries], dim=1)
    return Compressed(entries, block)


def _finished(comp: Compressor, pooled: torch.Tensor, n0: int) -> torch.Tensor:
    # pooled [b,n,d] entries n0.. -> normalized, rotated, simulated
    index = torch.arange(n0, n0 + pooled.size(1), device=pooled.device)
    entries = comp.rope(comp.norm(pooled), index * comp.ratio)
    if comp.rotate:
        entries = hadamard(entries)
    if comp.simulate:
        with torch.no_grad():
            value = comp._finish(pooled.detach(), index)
        entries = simulated(entries, value)
    return entries


def indexer_scores(idx: Indexer, x: torch.Tensor, qr: torch.Tensor, positions: torch.Tensor,
                   past: Compressed | None = None) -> tuple[torch.Tensor, Compressed]:
    """The lightning indexer's scores of every entry for every query [b,s,n] (no visibility mask yet), and its
    keys (after a prefix: `past`, the prefix's)."""
    q = idx.wq_b(qr).unflatten(-1, (idx.n_heads, idx.head_dim))
    q = hadamard(idx.rope(q, positions))
    if idx.simulate:
        with torch.no_grad():
            value = idx._queries(qr.detach(), positions)
        q = simulated(q, value)
    keys = compress(idx.compressor, x, past)  # [b,n,128]
    return index_scores(q, keys.entries, idx._weights(x)), keys


@torch.no_grad()
def top_k_mask(scores: torch.Tensor, visible: torch.Tensor, k: int) -> torch.Tensor:
    """The indexer's selection [b,s,n]: each query's top-k visible entries (no gradient flows through it), equal
    scores ranked as inference ranks them (`indexer.ranked`); a -1 pick (a query seeing fewer than k entries, all
    of them picked anyway) marks entry 0, which the caller's mask keeps only where visible."""
    k = min(k, scores.size(-1))
    selected = torch.zeros_like(visible)
    if k:
        selected.scatter_(-1, ranked(scores.masked_fill(~visible, float("-inf")), k).clamp(min=0), True)
    return selected


def index_kl(scores: torch.Tensor, comp_probs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(target || indexer) summed over the queries that see an entry, and their number. The target is the main
    attention's probability of each entry summed over heads, renormalized over the entries the query attends
    (detached); the indexer's distribution is the softmax of its scores over the same entries."""
    target = comp_probs.sum(dim=2)  # [b,s,n]
    total = target.sum(-1, keepdim=True)
    valid = mask.any(-1) & (total[..., 0] > 0)  # [b,s]
    target = target / total.clamp_min(1e-30)
    seen = mask.any(-1, keepdim=True)  # a row with no entry gets finite scores: no NaN in log_softmax's backward
    log_q = torch.where(seen, scores.masked_fill(~mask, float("-inf")), 0.0).log_softmax(-1).masked_fill(~mask, 0.0)
    kl = (torch.xlogy(target, target) - target * log_q).sum(-1)  # [b,s]
    return (kl * valid).sum(), valid.sum()
