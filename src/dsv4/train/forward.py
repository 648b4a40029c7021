"""The training forward: the same `dsv4.model` modules and weights as inference, run differentiably over whole
sequences from position 0 (no cache).

Inference (`Transformer.forward`) runs under `inference_mode` and writes into caches; here every query sees the
same keys through dense masks instead: its window (blocked: 128 queries against the 256 keys that can hold their
windows), and in compressed layers the entries complete for it (HCA: all; CSA: the indexer's top-k, or in the dense
warm-up all of them). The format simulation (FP8 KV, MXFP4 indexer keys and queries) rounds the forward values
exactly as inference does and passes gradients straight through. The lightning indexer sees detached inputs and
learns only from its KL loss towards the main attention's distribution over the compressed entries; its top-k
carries no gradient.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dsv4.model import Transformer
from dsv4.model.attention.attention import Attention
from dsv4.model.attention.compressor import Compressor
from dsv4.model.attention.indexer import Indexer, entry_visible, index_scores
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


@dataclass
class ForwardStats:
    """What one training forward measured besides the logits."""

    index_kl: list[torch.Tensor] = field(default_factory=list)  # per CSA layer, a scalar (grad to the indexer)


@dataclass
class TrainOutput:
    logits: torch.Tensor  # [b,s,vocab] float32: the token after each position
    mtp_logits: list[torch.Tensor]  # per MTP depth k: [b,s-1-k,vocab], the token two (k+2) after each position
    stats: ForwardStats


def train_forward(model: Transformer, ids: torch.Tensor, sparse: bool = True) -> TrainOutput:
    """ids [b,s] at positions 0..s-1 -> logits of every position (and of the MTP layers). `sparse=False` is the
    indexer's dense warm-up: CSA queries attend to every complete entry."""
    if ids.ndim != 2:
        raise ValueError(f"ids must be [batch, seq]; got shape {tuple(ids.shape)}")
    c, stats = model.config, ForwardStats()
    h = model.embed(ids).unsqueeze(2).repeat(1, 1, c.hc_mult, 1)  # [b,s,hc,d]
    for layer in model.layers:
        h = block_forward(layer, h, ids, sparse, stats)
    mtp_logits, streams = [], h
    for depth, mtp in enumerate(model.mtp):
        streams, next_ids = streams[:, :-1], ids[:, depth + 1:]
        streams = mtp_forward(mtp, streams, next_ids, model, stats)
        x = hc_head(streams, mtp.hc_head_fn, mtp.hc_head_scale, mtp.hc_head_base, c.norm_eps, c.hc_eps)
        mtp_logits.append(model.head(mtp.norm(x)))
    return TrainOutput(model.logits(h), mtp_logits, stats)


def mtp_forward(mtp: MTPBlock, h: torch.Tensor, next_ids: torch.Tensor, model: Transformer,
                stats: ForwardStats) -> torch.Tensor:
    # h [b,s,hc,d] main streams, next_ids [b,s] the tokens after them -> the MTP block's streams [b,s,hc,d]
    e = mtp.enorm(model.embed(next_ids))
    x = mtp.e_proj(e).unsqueeze(2) + mtp.h_proj(mtp.hnorm(h))
    return block_forward(mtp, x, next_ids, True, stats)


def block_forward(block: Block, x: torch.Tensor, ids: torch.Tensor, sparse: bool, stats: ForwardStats):
    # x [b,s,hc,d] -> [b,s,hc,d]
    h, post, comb = block._pre(x, "attn")
    x = hc_post(attention_forward(block.attn, block.attn_norm(h), sparse, stats), x, post, comb)
    h, post, comb = block._pre(x, "ffn")
    return hc_post(block.ffn(block.ffn_norm(h), ids), x, post, comb)


def attention_forward(attn: Attention, x: torch.Tensor, sparse: bool, stats: ForwardStats) -> torch.Tensor:
    """x [b,s,dim] at positions 0.. -> [b,s,dim]."""
    b, s, _ = x.shape
    positions = torch.arange(s, device=x.device)
    q, kv, qr = _qkv(attn, x, positions)
    win_logits, win_keys = window_logits(q, kv, attn.window_size, attn.softmax_scale)  # [b,s,h,2w], [b,s/w,2w,d]
    entries = comp_logits = None
    if attn.ratio:
        entries = compress(attn.compressor, x)  # [b,n,d]
        mask = entry_visible(positions, entries.size(1), attn.ratio).expand(b, -1, -1)  # [b,s,n]
        if attn.ratio == 4:
            scores = indexer_scores(attn.indexer, x.detach(), qr.detach(), positions)  # [b,s,n]
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
            stats.index_kl.append(index_kl(scores, comp_probs.detach(), mask))
    return attn._out(o.to(q.dtype), positions)


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


def window_logits(q: torch.Tensor, kv: torch.Tensor, window: int, scale: float):
    """q [b,s,h,d], kv [b,s,d] -> logits [b,s,h,2w] of each query against the keys of its block and the block
    before (masked to its window), and those keys [b,s/w,2w,d] (s padded up to a multiple of w)."""
    b, s, h, d = q.shape
    nb = -(-s // window)
    pad = nb * window - s
    qb = F.pad(q.float(), (0, 0, 0, 0, 0, pad)).view(b, nb, window, h, d)
    kb = F.pad(kv.float(), (0, 0, window, pad)).view(b, nb + 1, window, d)
    keys = torch.cat([kb[:, :-1], kb[:, 1:]], dim=2)  # [b,nb,2w,d]: block j-1, block j
    logits = torch.einsum("bnqhd,bnkd->bnqhk", qb, keys) * scale
    q_pos = torch.arange(window)[:, None] + window  # within the pair of blocks
    dist = q_pos - torch.arange(2 * window)[None, :]  # [w,2w]
    first = torch.zeros(nb, 1, 1, dtype=torch.bool)
    first[0] = True  # block -1 does not exist
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


def compress(comp: Compressor, x: torch.Tensor) -> torch.Tensor:
    """Compressor.forward from position 0 with no state: x [b,s,dim] -> entries [b,s//ratio,head_dim], finished
    (normalized, rotated, simulated) as the cache holds them."""
    b, s, _ = x.shape
    r = comp.ratio
    n = s // r
    kv = comp.wkv(x.float())[:, :n * r]  # [b,n·r,coff·d]
    score = comp.wgate(x.float())[:, :n * r] + comp.ape[torch.arange(n * r, device=x.device) % r]
    kv, score = kv.unflatten(1, (n, r)), score.unflatten(1, (n, r))
    prev = None
    if comp.overlap:  # before block 0 the state holds an empty block: zero kv, -inf scores
        prev = (kv.new_zeros(b, r, kv.size(-1)), kv.new_full((b, r, kv.size(-1)), float("-inf")))
    pooled = comp._pool(kv, score, prev).to(x.dtype)  # [b,n,d]
    index = torch.arange(n, device=x.device)
    entries = comp.rope(comp.norm(pooled), index * r)
    if comp.rotate:
        entries = hadamard(entries)
    if comp.simulate:
        with torch.no_grad():
            value = comp._finish(pooled.detach(), index)
        entries = simulated(entries, value)
    return entries


def indexer_scores(idx: Indexer, x: torch.Tensor, qr: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The lightning indexer's scores of every entry for every query [b,s,n] (no visibility mask yet)."""
    q = idx.wq_b(qr).unflatten(-1, (idx.n_heads, idx.head_dim))
    q = hadamard(idx.rope(q, positions))
    if idx.simulate:
        with torch.no_grad():
            value = idx._queries(qr.detach(), positions)
        q = simulated(q, value)
    keys = compress(idx.compressor, x)  # [b,n,128]
    return index_scores(q, keys, idx._weights(x))


@torch.no_grad()
def top_k_mask(scores: torch.Tensor, visible: torch.Tensor, k: int) -> torch.Tensor:
    """The indexer's selection [b,s,n]: each query's top-k visible entries (no gradient flows through it)."""
    k = min(k, scores.size(-1))
    selected = torch.zeros_like(visible)
    if k:
        top = scores.masked_fill(~visible, float("-inf")).topk(k, dim=-1).indices
        selected.scatter_(-1, top, True)
    return selected


def index_kl(scores: torch.Tensor, comp_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(target || indexer) averaged over the queries that see an entry. The target is the main attention's
    probability of each entry summed over heads, renormalized over the entries the query attends (detached);
    the indexer's distribution is the softmax of its scores over the same entries."""
    target = comp_probs.sum(dim=2)  # [b,s,n]
    total = target.sum(-1, keepdim=True)
    valid = mask.any(-1) & (total[..., 0] > 0)  # [b,s]
    target = target / total.clamp_min(1e-30)
    seen = mask.any(-1, keepdim=True)  # a row with no entry gets finite scores: no NaN in log_softmax's backward
    log_q = torch.where(seen, scores.masked_fill(~mask, float("-inf")), 0.0).log_softmax(-1).masked_fill(~mask, 0.0)
    kl = (torch.xlogy(target, target) - target * log_q).sum(-1)  # [b,s]
    return (kl * valid).sum() / valid.sum().clamp_min(1)
