"""Tensor-like views that let `dsv4.model` read and write the paged, packed pools through its ordinary cache
indexing (`cache.window[:b, slots]`, `state.entries[:b, a:c] = x`, `state.kv_state[:b, :r]`).

Row i of the model's batch maps to a request: its slot in the per-request pools (window ring, compressor state)
or its block table in the paged entry pools. A `codec` (a layout from `layout.py`) packs values on write and
unpacks them on read (`gather`: picks pool rows and decodes them, one opaque op in a compiled step); without one
the pool holds float values as they are.

Batch rows are indexed `[:b]` (rows 0..b-1) or by a LongTensor of row numbers that broadcasts against the other
index tensors, as in plain tensor indexing (`entries[rows[:, None], idx]` with rows [b], idx [b,k] -> [b,k,d]).
"""

import torch

from dsv4 import kernels

from .layout import IndexerKeyLayout


class SlotRows:
    """Rows `slots` [b] of a per-request pool [max_requests, n, width] (packed bytes or float)."""

    def __init__(self, pool: torch.Tensor, slots: torch.Tensor, dtype: torch.dtype, codec=None):
        self.pool, self.slots, self.dtype, self.codec = pool, slots, dtype, codec

    def _index(self, key) -> tuple:
        rows, rest = self._rows(key)
        if rows.ndim == 1 and rest and isinstance(rest[0], torch.Tensor) and not self._by_tensor(key):
            return (rows[:, None],) + rest  # [:b] x [k] slots -> [b,k]
        return (rows,) + rest

    @staticmethod
    def _by_tensor(key) -> bool:
        return isinstance(key, tuple) and isinstance(key[0], torch.Tensor)

    def _rows(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if isinstance(key[0], torch.Tensor):
            return self.slots[key[0]], key[1:]
        if not isinstance(key[0], slice) or key[0].start or key[0].step:
            raise IndexError(f"cache views index the batch with [:b] or a tensor of rows; got {key[0]!r}")
        return self.slots[key[0]], key[1:]

    def __getitem__(self, key) -> torch.Tensor:
        rows, rest = self._rows(key)
        if not rest and rows.ndim == 1:  # whole rows (window rings): index_select is several times advanced indexing
            if self.codec:  # (gathered and decoded by one op: see the layouts' `gather`)
                return self.codec.gather(self.pool, rows, self.dtype)
            value = self.pool.index_select(0, rows)
        elif None in rest:  # a new axis: gather the rows first, then apply the rest as a plain tensor index
            value = self.pool[rows][(slice(None),) + rest]
        else:
            value = self.pool[self._index(key)]
        return (self.codec.unpack(value, self.dtype) if self.codec else value).to(self.dtype)

    def __setitem__(self, key, value: torch.Tensor):
        index = self._index(key)
        value = self.codec.pack(value) if self.codec else value.to(self.pool.dtype)
        if torch.compiler.is_compiling() and len(index) == 2:
            rows, cols = index
            if isinstance(cols, slice):
                cols = torch.arange(self.pool.size(1), device=rows.device)[cols]
                rows = rows[:, None] if rows.ndim == 1 else rows
            put = kernels.op("put_rows", self.pool) or put_rows
            shape = torch.broadcast_shapes(rows.shape, cols.shape) + self.pool.shape[2:]
            put(self.pool, rows, cols, value.expand(shape))
        else:
            self.pool[index] = value


@torch.library.custom_op("dsv4::put_rows", mutates_args=("pool",))
def put_rows(pool: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, value: torch.Tensor) -> None:
    """pool[rows, cols] = value, in place, as one opaque op of a compiled step. Written as a plain index_put, a
    pool the step reads and then writes again (a compressor's state) is copied whole by inductor at every step
    (it cannot prove the write in-placeable): a per-slot pool of every request slot, per layer, per token. An
    opaque mutating op is written in place. (A pool must still not be read before the step's first write to it:
    that copies it too, whichever op writes.)"""
    at = (rows * pool.size(1) + cols).flatten()  # pool positions of the written rows, seen as [slots·n, ...]
    pool.view(-1, *pool.shape[2:]).index_copy_(0, at, value.reshape(-1, *pool.shape[2:]))  # (index_put: ~5x slower)


class PagedEntries:
    """Compressed entries of a batch of requests in a paged pool [num_blocks, per_block, nbytes]: entry e of row
    i lives in block tables[i][e // per_block] at offset e % per_block."""

    def __init__(self, pool: torch.Tensor, tables: torch.Tensor, dtype: torch.dtype, codec):
        self.pool, self.tables, self.dtype, self.codec = pool, tables, dtype, codec  # tables: [b, max_blocks]
        self.per_block = pool.size(1)

    def _where(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        rows, entries = key
        if isinstance(rows, torch.Tensor) and isinstance(entries, torch.Tensor):  # per-row entry numbers
            blocks = self.tables[rows, entries // self.per_block]
            if not torch.compiler.is_compiling() and (blocks < 0).any():  # (a host read: checked in eager only)
                raise IndexError(f"entries up to {int(entries.max())} reach past a request's block table")
            return blocks, entries % self.per_block
        if not isinstance(rows, slice) or rows.start or rows.step or not isinstance(entries, slice) or entries.step:
            raise IndexError(f"paged entries are indexed [:b, a:c]; got {key!r}")
        tables = self.tables[rows]
        e = torch.arange(entries.start or 0, entries.stop, device=tables.device)
        blocks = tables[:, e // self.per_block]  # [b,n]
        if not torch.compiler.is_compiling() and (blocks < 0).any():
            raise IndexError(f"entries {entries.start or 0}..{entries.stop} reach past a request's block table")
        return blocks, (e % self.per_block).expand_as(blocks)

    def _rows(self, key) -> torch.Tensor:
        """Row numbers in the pool seen as [num_blocks·per_block, nbytes] (index_select on them is several
        times faster than advanced indexing with (block, offset) pairs)."""
        blocks, offsets = self._where(key)
        return blocks * self.per_block + offsets

    def __getitem__(self, key) -> torch.Tensor:
        rows, entries = key
        if isinstance(rows, slice) and isinstance(entries, slice) and entries.stop is not None and not entries.step:
            return self._span(rows, entries.start or 0, entries.stop)
        return self.codec.gather(self.pool.view(-1, self.pool.size(-1)), self._rows(key), self.dtype)  # [b,n,d]

    def _span(self, rows: slice, a: int, c: int) -> torch.Tensor:
        """[:b, a:c]: every row's entries a..c-1, read as whole blocks (a block's entries copied at once, where a
        gather by entry copies each entry's bytes apart: several times faster) -> [b,c-a,d]."""
        blocks, skip = self._span_blocks(rows, a, c)
        return self.codec.gather(self.pool, blocks, self.dtype).flatten(1, 2)[:, skip: skip + c - a]

    def _span_blocks(self, rows: slice, a: int, c: int) -> tuple[torch.Tensor, int]:
        """[:b, a:c] -> the blocks holding entries a..c-1 of every row [b, blocks], and how many entries of the first
        block come before a."""
        if rows.start or rows.step:
            raise IndexError(f"paged entries are indexed [:b, a:c]; got rows {rows!r}")
        first = a // self.per_block
        blocks = self.tables[rows, first: -(-c // self.per_block)]
        if not torch.compiler.is_compiling() and (blocks < 0).any():  # (a host read: checked in eager only)
            raise IndexError(f"entries {a}..{c} reach past a request's block table")
        return blocks, a - first * self.per_block

    def index_scores(self, key, q: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
        """Σ_h w·ReLU(q·k) [b,n] over the indexer keys at `key` (as `self[key]` reads them), q [b,h,d] float32,
        weights [b,h]: one C++ op scores each packed key where it decodes it, with no decoded copy of the keys.
        None where that op is not built or the pool holds other entries (the caller decodes, then scores)."""
        score = kernels.op("index_scores_packed", self.pool)
        if score is None or not isinstance(self.codec, IndexerKeyLayout):
            return None
        dim, block = self.codec.dim, self.codec.block
        rows, entries = key
        if isinstance(rows, slice) and isinstance(entries, slice) and entries.stop is not None and not entries.step:
            a, c = entries.start or 0, entries.stop
            blocks, skip = self._span_blocks(rows, a, c)
            return score(q, weights, self.pool, blocks, dim, block)[:, skip: skip + c - a]
        return score(q, weights, self.pool.view(-1, self.pool.size(-1)), self._rows(key), dim, block)

    def __setitem__(self, key, value: torch.Tensor):
        rows = self._rows(key)
        width = self.pool.size(-1)
        packed = self.codec.pack(value).expand(*rows.shape, width)
        self.pool.view(-1, width).index_copy_(0, rows.flatten(), packed.reshape(-1, width))
