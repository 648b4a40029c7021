"""Lightning `Indexer`: picks, per query, the top-k compressed entries of a ratio-4 (CSA) layer.

Queries come from the attention's query latent: q = wq_b(qr) [b,s,h,128], RoPE on the last 64 dims, Hadamard,
MXFP4 simulation. Keys come from the indexer's own compressor (Hadamard + MXFP4 inside). Score of entry t for
query s: Σ_h w[s,h] · ReLU(q[s,h] · k[t]) with w = weights_proj(x) · 128^-0.5 · h^-0.5; entries not yet complete
for the query are excluded, then top-k with k = min(index_topk, #entries), equal scores ranked lower entry first
(`ranked`).
"""

import torch
from torch import nn

from dsv4 import kernels

from ..cache import CompressorState
from ..config import ModelConfig
from ..linear import Linear
from ..quant import fp4_round, hadamard
from ..rope import Rope
from .compressor import Compressor


class Indexer(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype, ratio: int = 4):
        super().__init__()
        self.n_heads, self.head_dim, self.ratio = config.index_n_heads, config.index_head_dim, ratio
        self.index_topk = config.index_topk
        self.simulate = config.simulate_kv_quant
        self.wq_b = Linear(config.q_lora_rank, self.n_heads * self.head_dim, dtype, config.rounds_input(config.dtype))
        self.weights_proj = Linear(config.dim, self.n_heads, dtype)  # BF16 in the checkpoint: input unrounded
        self.compressor = Compressor(config, ratio, self.head_dim, rotate=True)
        self.rope = Rope(config, compressed=True)
        self.softmax_scale = self.head_dim**-0.5
        self.decode_tile = 8192  # keys decoded and scored per tile in a decode step (see _decoded_scores)

    def forward(self, x: torch.Tensor, qr: torch.Tensor, start_pos: int, state: CompressorState) -> torch.Tensor:
        """Dense reference: x [b,s,dim], qr [b,s,q_lora_rank] -> selected [b,s,n] bool over the n entries
        available so far."""
        b, s, _ = x.shape
        positions = torch.arange(start_pos, start_pos + s, device=x.device)
        q = self._queries(qr, positions)
        n = self.compressor(x, start_pos, state)
        keys = state.entries[:b, :n]  # [b,n,d]
        weights = self._weights(x)
        scores = torch.cat([index_scores(q[:, i:i + 256], keys, weights[:, i:i + 256])
                            for i in range(0, s, 256)], dim=1)  # [b,s,n]
        visible = entry_visible(positions, n, self.ratio)  # [s,n]
        scores = scores.masked_fill(~visible, float("-inf"))
        k = min(self.index_topk, n)
        selected = torch.zeros_like(scores, dtype=torch.bool)
        if k:  # (a -1 pick: a query seeing fewer than k entries, all of them picked anyway)
            selected.scatter_(-1, ranked(scores, k).clamp(min=0), True)
        return selected & visible

    def select(self, x: torch.Tensor, qr: torch.Tensor, start_pos: int, state: CompressorState,
               budget: int = 1 << 22) -> torch.Tensor:
        """Prefill: x [b,s,dim], qr [b,s,q_lora_rank] -> each query's top-k entry numbers [b,s,k]
        (k = min(index_topk, n)) best first, -1 after them where a query sees fewer. Up to 256 queries at a
        time are scored against tiles of the entries complete for them, merging a running top-k: the scores stay
        under `budget` elements ([b,q,h,tile]) and a tile of keys stays in cache while the queries pass over it."""
        b, s, _ = x.shape
        positions = torch.arange(start_pos, start_pos + s, device=x.device)
        q = self._queries(qr, positions)
        n = self.compressor(x, start_pos, state)
        k = min(self.index_topk, n)
        top = torch.full((b, s, k), -1, dtype=torch.long, device=x.device)
        if not k:
            return top
        keys = state.entries[:b, :n]  # [b,n,d] dequantized once for the whole chunk
        weights = self._weights(x)
        step = min(s, 256)
        tile = max(k, budget // (b * self.n_heads * step))
        for i in range(0, s, step):
            pos = positions[i:i + step]
            m = (int(pos[-1]) + 1) // self.ratio  # entries complete for the last of these queries
            all_see = (int(pos[0]) + 1) // self.ratio  # entries complete for every one of them
            best, best_idx = top.new_empty(b, len(pos), 0, dtype=torch.float32), top.new_empty(b, len(pos), 0)
            for a in range(0, m, tile):
                e = min(m, a + tile)
                scores = index_scores(q[:, i:i + step], keys[:, a:e], weights[:, i:i + step])  # [b,q,e-a]
                if e > all_see:  # only tiles reaching the newest entries need the mask
                    scores.masked_fill_(~entry_visible(pos, e, self.ratio, first=a), float("-inf"))
                # the running best (best first, equal ones lower entry first) precede the tile's entries: among equal
                # scores positions here follow entry numbers, so ranking the two side by side keeps and lists the
                # lower entries first, as one pass over all entries would
                merged = torch.cat([best, scores], dim=-1)
                picked = ranked(merged, k)
                best_idx = merged_indices(best_idx, picked.clamp(min=0), a)
                best = merged.gather(-1, picked.clamp(min=0)).masked_fill(picked < 0, float("-inf"))
            top[:, i:i + step, :best.size(-1)] = best_idx.masked_fill(best == float("-inf"), -1)
        return top

    def step(self, x: torch.Tensor, qr: torch.Tensor, pos: torch.Tensor, state: CompressorState) -> torch.Tensor:
        """One decode token per row: x [b,1,dim], qr [b,1,q_lora_rank] at positions pos [b] -> the top-k entries
        of each row [b,k] (k = min(index_topk, most entries of any row)) best first, -1 after them where a row
        has fewer."""
        q = self._queries(qr, pos[:, None])
        n = self.compressor.step(x, pos, state)  # [b]
        entries, _ = all_entries(n, state.static_entries)  # [b,t]
        weights = self._weights(x)
        scores = packed_scores(state, entries, q[:, 0].float(), weights[:, 0])
        if scores is None:  # no C++ scorer: the keys decoded first, then scored
            scores = self._decoded_scores(q, weights, state, entries)
        return ranked(scores, self.index_topk, n)

    def _decoded_scores(self, q: torch.Tensor, weights: torch.Tensor, state: CompressorState,
                        entries: torch.Tensor) -> torch.Tensor:
        # q [b,1,h,d], weights [b,1,h], entries [b,t] -> scores [b,t]; keys are dequantized a cache-sized tile at a
        # time (1M context: 262K keys); one tile runs no loop, whose trip count would fix a compiled step's width
        tile = self.decode_tile
        if entries.size(1) <= tile:
            return index_scores(q, read_entries(state, entries), weights)[:, 0]
        scores = torch.empty(entries.shape, dtype=torch.float32, device=q.device)
        for a in range(0, entries.size(1), tile):
            scores[:, a:a + tile] = index_scores(q, read_entries(state, entries, a, a + tile), weights)[:, 0]
        return scores

    def _queries(self, qr: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # qr [b,s,q_lora_rank], positions [s] or [b,s] -> q [b,s,h,d] rotated, Hadamard, MXFP4-simulated
        q = self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim))
        q = hadamard(self.rope(q, positions))
        return fp4_round(q, 32) if self.simulate else q

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        # x [b,s,dim] -> head weights [b,s,h] float32
        return self.weights_proj(x).float() * (self.softmax_scale * self.n_heads**-0.5)


def ranked(scores: torch.Tensor, k: int, counts: torch.Tensor | None = None) -> torch.Tensor:
    """The positions of the k best scores along the last dim: [..., t] -> [..., min(k, t)], best first, -1 after
    them where fewer are finite (-inf: masked; NaN counts as -inf). Of equal scores the lower positions are kept
    and listed first, in every path: torch.topk leaves that to its algorithm and ReLU leaves many scores at exactly
    0, and a multi-token verify step (prefill's path) must select, and sum over in the same order, what decode
    does. (Listed in position order instead, the engine's FP8-simulated logits left the model's direct forward by
    0.69 on tests/engine/test_engine_fp8's checkpoint: a summation order FP8 rounding amplifies.) counts [rows]
    (2-D scores): only each row's first counts[i] positions compete. The C++ op where it is built (one pass a row
    with a running bar), else torch ops: the k-th best score by topk, the equal ones kept from the left, the k kept
    then ordered by a stable sort."""
    t = scores.size(-1)
    k = min(k, t)
    if not k:  # (no entries yet: nothing to reshape by)
        return torch.empty(*scores.shape[:-1], 0, dtype=torch.long, device=scores.device)
    flat = scores.reshape(-1, t)
    if counts is None:
        counts = torch.full((flat.size(0),), t, dtype=torch.long, device=scores.device)
    select = kernels.op("top_entries", scores)
    if select is not None:
        return select(flat, counts, k).view(*scores.shape[:-1], k)
    at = torch.arange(t, device=scores.device)
    flat = flat.masked_fill((at >= counts[:, None]) | flat.isnan(), float("-inf"))
    kth = flat.topk(k, dim=-1).values[:, -1:]
    ties = flat == kth
    room = k - (flat > kth).sum(-1, keepdim=True)
    kept = ((flat > kth) | (ties & (ties.cumsum(-1) <= room))) & (flat > float("-inf"))
    top = torch.where(kept, t - at, 0).topk(k, dim=-1).indices  # the kept positions, lowest first
    values = flat.gather(-1, top).masked_fill_(~kept.gather(-1, top), float("-inf"))
    values, order = values.sort(dim=-1, descending=True, stable=True)  # best first, equal ones lowest first
    return top.gather(-1, order).masked_fill_(values == float("-inf"), -1).view(*scores.shape[:-1], k)


def merged_indices(best_idx: torch.Tensor, picked: torch.Tensor, first: int) -> torch.Tensor:
    """Entry numbers of a running top-k merged with a tile: `picked` indexes [kept entries best_idx [...,m],
    then the tile's entries first, first+1, ...]."""
    m = best_idx.size(-1)
    if not m:
        return picked + first
    return torch.where(picked < m, best_idx.gather(-1, picked.clamp(max=m - 1)), picked + (first - m))


def all_entries(n: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry counts per row n [b] -> (entry numbers [b,t], visible [b,t]) over t = width columns (None: max(n),
    read from the tensor); columns past a row's count read its entry 0 (always a valid address) and are not
    visible."""
    t = torch.arange(int(n.max()) if width is None else width, device=n.device).expand(n.size(0), -1)
    visible = t < n[:, None]
    return t.masked_fill(~visible, 0), visible


def read_entries(state: CompressorState, entries: torch.Tensor, a: int = 0, e: int | None = None) -> torch.Tensor:
    """Columns a..e-1 of every row's entry numbers `entries` [b,t] (from `all_entries`) -> [b,e-a,d]. Over a
    fixed-width table (`static_entries`) every column is an address, so they are read as one span (whole blocks);
    otherwise by number."""
    e = entries.size(1) if e is None else e
    if state.static_entries is not None:
        return state.entries[:entries.size(0), a:e]
    rows = torch.arange(entries.size(0), device=entries.device)[:, None]
    return state.entries[rows, entries[:, a:e]]


def packed_scores(state: CompressorState, entries: torch.Tensor, q: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor | None:
    """`index_scores` of one query per row, q [b,h,d] and weights [b,h], over every row's entries [b,t] (from
    `all_entries`) -> [b,t], scored from the packed cache where it offers that (`PagedEntries.index_scores`),
    else None."""
    score = getattr(state.entries, "index_scores", None)
    if score is None:
        return None
    if state.static_entries is not None:
        return score((slice(None, entries.size(0)), slice(0, entries.size(1))), q, weights)
    return score((torch.arange(entries.size(0), device=entries.device)[:, None], entries), q, weights)


def entry_visible(positions: torch.Tensor, n: int, ratio: int, first: int = 0) -> torch.Tensor:
    """[s] query positions -> [s,n-first] for entries first..n-1: entry i (tokens i·ratio .. i·ratio+ratio-1)
    is complete for query t iff (i+1)·ratio <= t+1."""
    entries = torch.arange(first, n, device=positions.device)
    return (entries[None, :] + 1) * ratio <= positions[:, None] + 1


def index_scores(q: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """q [b,s,h,d], keys [b,n,d], weights [b,s,h] -> Σ_h w·ReLU(q·k) [b,s,n]."""
    scores = torch.einsum("bshd,btd->bsht", q.float(), keys.float()).relu_()
    return torch.einsum("bsht,bsh->bst", scores, weights)  # the head sum as a batched matrix-vector product
