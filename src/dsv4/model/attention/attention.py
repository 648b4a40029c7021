"""`Attention`: query LoRA, one shared K=V head, window of 128 + compressed entries, attention sink, inverse
RoPE on the output and the grouped low-rank output projection.

Each query sees the last `window_size` tokens (itself included) and, in compressed layers, the completed
compressed entries: all of them at ratio 128 (HCA), the indexer's top-k at ratio 4 (CSA). Softmax includes a
per-head sink logit in the denominator only, so the attention mass can be below 1.
"""

import torch
from torch import nn

from dsv4 import kernels

from ..cache import LayerCache
from ..config import ModelConfig
from ..linear import Linear, linear
from ..norm import RMSNorm, rms_normalize
from ..quant import kv_entry_round
from ..rope import Rope
from .compressor import Compressor
from .indexer import Indexer, all_entries, entry_visible, read_entries
from .sparse import OwnKeys, gathered_sink_attention, sink_attention


class Attention(nn.Module):
    def __init__(self, layer_id: int, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        # the projections stored in the checkpoint's format; wo_a is stored FP8 too, but the reference dequantizes
        # it to BF16 at conversion and multiplies in an einsum, so its input is never rounded
        c, aq = config, config.rounds_input(config.dtype)
        self.n_heads, self.head_dim, self.rope_head_dim = c.n_heads, c.head_dim, c.rope_head_dim
        self.n_groups, self.o_lora_rank, self.window_size = c.o_groups, c.o_lora_rank, c.window_size
        self.ratio = c.compress_ratio(layer_id)
        self.eps, self.simulate, self.rope_bf16 = c.norm_eps, c.simulate_kv_quant, c.simulate_kv_rope_bf16
        self.softmax_scale = c.head_dim**-0.5
        self.attn_sink = nn.Parameter(torch.zeros(c.n_heads, dtype=torch.float32), requires_grad=False)
        self.wq_a = Linear(c.dim, c.q_lora_rank, dtype, aq)
        self.q_norm = RMSNorm(c.q_lora_rank, c.norm_eps)
        self.wq_b = Linear(c.q_lora_rank, c.n_heads * c.head_dim, dtype, aq)
        self.wkv = Linear(c.dim, c.head_dim, dtype, aq)
        self.kv_norm = RMSNorm(c.head_dim, c.norm_eps)
        self.wo_a = Linear(c.n_heads * c.head_dim // c.o_groups, c.o_groups * c.o_lora_rank, dtype)
        self.wo_b = Linear(c.o_groups * c.o_lora_rank, c.dim, dtype, aq)
        self.rope = Rope(c, compressed=self.ratio > 0)
        if self.ratio:
            self.compressor = Compressor(c, self.ratio, c.head_dim)
        if self.ratio == 4:
            self.indexer = Indexer(c, dtype, self.ratio)
        self.gathered_decode = True  # decode steps gather the selected entries (False: the dense masked path)
        self.gathered_prefill = True  # prefill likewise, a few queries at a time
        self.budget = 1 << 22  # prefill: logits and gathered keys per step stay under this many elements

    def forward(self, x: torch.Tensor, start_pos: int | torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """x [b,s,dim] at positions start_pos.. (an int shared by the rows, or one position per row [b] when
        s == 1) -> [b,s,dim]."""
        b, s, _ = x.shape
        if isinstance(start_pos, torch.Tensor) or (s == 1 and self.gathered_decode):
            pos = torch.as_tensor(start_pos, device=x.device).expand(b)  # [b]
            q, keys, mask = self._decode(x, pos, cache)
            return self._out(sink_attention(q, keys, mask, self.attn_sink, self.softmax_scale), pos[:, None])
        positions = torch.arange(start_pos, start_pos + s, device=x.device)
        if s > 1 and self.gathered_prefill:
            return self._out(self._prefill(x, start_pos, cache), positions)
        q, kv, qr = self._qkv(x, positions)
        keys, key_pos = self._window(kv, start_pos, cache)  # [b,k,d], [k]
        mask = window_mask(positions, key_pos, self.window_size)  # [s,k]
        mask = mask.expand(b, -1, -1)
        if self.ratio:
            selected = self.indexer(x, qr, start_pos, cache.indexer) if self.ratio == 4 else None
            n = self.compressor(x, start_pos, cache.compressor)
            visible = entry_visible(positions, n, self.ratio).expand(b, -1, -1)  # [b,s,n]
            if selected is not None:
                visible = visible & selected
            keys = torch.cat([keys, cache.compressor.entries[:b, :n].to(keys.dtype)], dim=1)
            mask = torch.cat([mask, visible], dim=-1)
        return self._out(sink_attention(q, keys, mask, self.attn_sink, self.softmax_scale), positions)

    def _prefill(self, x: torch.Tensor, start_pos: int, cache: LayerCache) -> torch.Tensor:
        """s > 1 tokens at start_pos.. -> attention output o [b,s,h,d]. A few queries at a time, each sees its
        window slice and, in HCA layers, the entries complete for it; in CSA layers its indexer top-k, gathered
        and dequantized per query. Nothing grows as [s, all entries]."""
        b, s, _ = x.shape
        positions = torch.arange(start_pos, start_pos + s, device=x.device)
        q, kv, qr = self._qkv(x, positions)
        win_keys, key_pos = self._window(kv, start_pos, cache)  # [b,o+s,d], [o+s]
        old = win_keys.size(1) - s  # cached window tokens before start_pos
        top = self.indexer.select(x, qr, start_pos, cache.indexer, self.budget) if self.ratio == 4 else None
        n = self.compressor(x, start_pos, cache.compressor) if self.ratio else 0
        hca = cache.compressor.entries[:b, :n].to(kv.dtype) if self.ratio == 128 else None  # [b,n,d]
        # with the C++ table ops each query scores its own 128 window keys (1.7x faster than the slice's shared
        # product, half of whose scores are masked) and reads its CSA entries in place; the Python table op would
        # copy every query's keys out
        tables = kernels.op("indexed_logits", q) is not None
        topk = top.size(-1) if top is not None else 0
        per_query = self.n_heads * (self.window_size + (n if hca is not None else 0) + topk)  # logits
        if not tables:  # and the copied keys; a step's queries share one window slice of step + 127 keys: more
            # queries per step would make each score keys it cannot see (2048 queries: 2175 keys each, 17x)
            per_query += topk * self.head_dim
        step = max(1, min(s, self.budget // (b * per_query), s if tables else self.window_size))
        # each step's output written while it is in cache (a cat at the end: 1.5%); one step's is the output
        out = q.new_empty(q.shape) if step < s else None
        win32 = win_keys.float() if tables else None
        for i in range(0, s, step):
            j = min(s, i + step)
            lo = max(0, old + i - self.window_size + 1)  # first window key any of these queries sees
            own = []
            if tables:
                own.append(OwnKeys.window(win32[:, lo:old + j], positions[i:j], start_pos - old + lo,
                                          self.window_size))  # key_pos[lo], without a host read
                keys = mask = None
            else:
                keys = win_keys[:, lo:old + j]
                mask = window_mask(positions[i:j], key_pos[lo:old + j], self.window_size).expand(b, -1, -1)
            if hca is not None:
                m = (start_pos + j) // self.ratio  # entries complete for the last of these queries
                visible = entry_visible(positions[i:j], m, self.ratio).expand(b, -1, -1)
                keys = hca[:, :m] if keys is None else torch.cat([keys, hca[:, :m]], dim=1)
                mask = visible if mask is None else torch.cat([mask, visible], dim=-1)
            if top is not None and top.size(-1):
                idx = top[:, i:j]  # [b,q,k]
                rows, index = distinct_entries(cache.compressor.entries, idx)
                own.append(OwnKeys(rows.to(kv.dtype).float(), index, idx >= 0))  # (kv's rounding, once a step)
            o = gathered_sink_attention(q[:, i:j], keys, mask, own, self.attn_sink, self.softmax_scale)
            if out is None:
                return o
            out[:, i:j] = o
        return out

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        # x [b,s,dim], positions [s] or [b,s] -> q [b,s,h,d], kv [b,s,d], qr [b,s,q_lora_rank]
        qr = self.q_norm(self.wq_a(x))
        q = rms_normalize(self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim)), self.eps)
        q = self.rope(q, positions)
        kv = self.rope(self.kv_norm(self.wkv(x)), positions)
        if self.simulate:  # the deployed entry: FP8 non-RoPE dims, BF16 RoPE dims
            kv = kv_entry_round(kv, self.rope_head_dim, self.rope_bf16)
        return q, kv, qr

    def _decode(self, x: torch.Tensor, pos: torch.Tensor, cache: LayerCache):
        """One token per row at positions pos [b]: the row's 128 window slots (this token in its own slot) and,
        in compressed layers, only the entries it attends to, gathered and dequantized: the indexer's top-k (CSA)
        or all of them (HCA). Returns q [b,1,h,d], keys [b,k,d], mask [b,1,k]."""
        b = x.size(0)
        q, kv, qr = self._qkv(x, pos[:, None])
        rows = torch.arange(b, device=x.device)
        # the ring is written before it is read: a compiled step that reads a pool before writing it copies the
        # whole pool (every request slot's ring) at each step; the token itself attends to its unrounded kv
        cache.window[rows[:, None], (pos % self.window_size)[:, None]] = kv.to(cache.window.dtype)
        keys = cache.window[:b].to(kv.dtype)  # [b,win,d]
        keys[rows, pos % self.window_size] = kv[:, 0]
        mask = torch.arange(self.window_size, device=x.device) <= pos[:, None]  # [b,win]: slots written so far
        if self.ratio:
            selected = self.indexer.step(x, qr, pos, cache.indexer) if self.ratio == 4 else None
            n = self.compressor.step(x, pos, cache.compressor)  # [b]
            if selected is not None:
                visible = selected >= 0
                entries = cache.compressor.entries[rows[:, None], selected.clamp_min(0)]  # [b,k,d]
            else:  # HCA: all entries
                selected, visible = all_entries(n, cache.compressor.static_entries)
                entries = read_entries(cache.compressor, selected)
            keys = torch.cat([keys, entries.to(keys.dtype)], dim=1)
            mask = torch.cat([mask, visible], dim=-1)
        return q, keys, mask[:, None]

    def _out(self, o: torch.Tensor, positions: torch.Tensor):
        # o [b,s,h,d] attention output, positions [s] or [b,s] -> [b,s,dim]
        b, s = o.shape[:2]
        o = self.rope(o, positions, inverse=True)
        o = o.view(b, s, self.n_groups, -1)  # [b,s,g,h/g·d]
        wo_a = self.wo_a.weight.view(self.n_groups, self.o_lora_rank, -1)
        o = o.to(self.wo_a.compute_dtype)
        if wo_a.dtype != o.dtype:  # a compact weight (Linear.compact_): one product per group
            o = torch.stack([linear(o[:, :, g], wo_a[g]) for g in range(self.n_groups)], dim=2)
        else:
            o = torch.einsum("bsgd,grd->bsgr", o, wo_a)
        return self.wo_b(o.flatten(2))

    def _window(self, kv: torch.Tensor, start_pos: int, cache: LayerCache):
        """Keys of the window branch: cached tokens before start_pos that some query still sees, then the new
        tokens; the new tokens' last `window_size` go into the ring buffer. Returns keys [b,k,d] and their
        positions [k]."""
        b, s, _ = kv.shape
        win = self.window_size
        old = torch.arange(max(0, start_pos - win + 1), start_pos, device=kv.device)
        keys = torch.cat([cache.window[:b, old % win].to(kv.dtype), kv], dim=1)
        key_pos = torch.cat([old, torch.arange(start_pos, start_pos + s, device=kv.device)])
        keep = key_pos[-min(s, win):]
        cache.window[:b, keep % win] = kv[:, -len(keep):].to(cache.window.dtype)
        return keys, key_pos


def window_mask(q_pos: torch.Tensor, key_pos: torch.Tensor, window: int) -> torch.Tensor:
    """[s] query and [k] key positions -> [s,k]: the key is one of the query's last `window` tokens."""
    dist = q_pos[:, None] - key_pos[None, :]
    return (dist >= 0) & (dist < window)


def distinct_entries(entries, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """entries: a batch's compressed entries (tensor or packed view) [b,n,d]; idx [b,q,k] entry numbers (-1:
    none, read as entry 0) -> (rows [u,d], index [b,q,k]): each distinct entry read (dequantized) once, and
    rows[index] = the entries idx names. Neighbouring queries pick mostly the same entries."""
    b = idx.size(0)
    span = max(1, int(idx.max()) + 1)
    flat = idx.clamp_min(0) + torch.arange(b, device=idx.device)[:, None, None] * span  # row-major entry ids
    if b * span > 16 * flat.numel():  # long contexts: sorting the q·k ids beats a pass over every entry id
        distinct, inverse = torch.unique(flat, return_inverse=True)  # [u], [b,q,k]
    else:  # marks and a running count number the distinct ids in order (the sort was 1.6% of a 4K prefill)
        seen = torch.zeros(b * span, dtype=torch.long, device=idx.device)
        seen[flat.flatten()] = 1
        distinct = seen.nonzero().squeeze(1)  # [u], ascending
        inverse = (seen.cumsum(0) - 1)[flat]  # [b,q,k]
    return entries[distinct // span, distinct % span], inverse
