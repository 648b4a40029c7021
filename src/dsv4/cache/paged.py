"""`PagedKVCache`: the deployed KV cache, allocated once as uint8 pools per layer kind.

Paged by blocks of `block_size` context tokens (a multiple of 128 = lcm of the ratios): each CSA layer has a
main-entry pool [num_blocks, block_size/4, 584] and an indexer-key pool [num_blocks, block_size/4, 68], each HCA
layer [num_blocks, block_size/128, 584]. Per request slot (`max_requests`): a 128-entry window ring of 584 B
entries in every layer and the FP32 compressor state of unfinished blocks. `view(slots, tables)` presents a batch
of requests to `dsv4.model` as a `ModelCache`.
"""

from dataclasses import dataclass

import torch

from dsv4.model.cache import CompressorState, LayerCache
from dsv4.model.config import ModelConfig

from .layout import IndexerKeyLayout, MainEntryLayout
from .views import PagedEntries, SlotRows


@dataclass
class LayerPools:
    window: torch.Tensor  # [max_requests, window_size, 584] uint8
    entries: torch.Tensor | None = None  # [num_blocks, block_size/ratio, 584] uint8
    keys: torch.Tensor | None = None  # [num_blocks, block_size/4, 68] uint8 (CSA)
    state: tuple[torch.Tensor, torch.Tensor] | None = None  # kv, score [max_requests, coff·ratio, coff·d] fp32
    index_state: tuple[torch.Tensor, torch.Tensor] | None = None  # the indexer compressor's (CSA)


class PagedKVCache:
    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int = 128, max_requests: int = 16,
                 dtype: torch.dtype = torch.float32, device=None, mtp: bool = False):
        if block_size <= 0 or block_size % 128:
            raise ValueError(f"block_size must be a positive multiple of 128 (the HCA ratio); got {block_size}")
        if num_blocks <= 0 or max_requests <= 0:
            raise ValueError(f"num_blocks={num_blocks} and max_requests={max_requests} must be positive")
        self.config, self.num_blocks, self.block_size = config, num_blocks, block_size
        self.max_requests, self.dtype, self.device = max_requests, dtype, device
        self.main = MainEntryLayout(config.head_dim, config.rope_head_dim)
        self.index_key = IndexerKeyLayout(config.index_head_dim)
        self.layers = [self._layer(config.compress_ratio(i)) for i in range(config.n_layers)]
        # the MTP layers' caches, for speculative decoding (not part of the KV plan)
        self.mtp = [self._layer(config.compress_ratio(i)) for i in range(config.n_layers, config.n_all_layers)] \
            if mtp else []

    def _bytes(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.uint8, device=self.device)

    def _state(self, ratio: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        coff = 2 if ratio == 4 else 1
        shape = (self.max_requests, coff * ratio, coff * width)
        kv = torch.zeros(shape, dtype=torch.float32, device=self.device)
        return kv, torch.full(shape, float("-inf"), dtype=torch.float32, device=self.device)

    def _layer(self, ratio: int) -> LayerPools:
        c = self.config
        pools = LayerPools(window=self._bytes(self.max_requests, c.window_size, self.main.nbytes))
        if ratio:
            pools.entries = self._bytes(self.num_blocks, self.block_size // ratio, self.main.nbytes)
            pools.state = self._state(ratio, c.head_dim)
        if ratio == 4:
            pools.keys = self._bytes(self.num_blocks, self.block_size // 4, self.index_key.nbytes)
            pools.index_state = self._state(ratio, c.index_head_dim)
        return pools

    def reset_slot(self, slot: int):
        """Empties a request slot's compressor state (the window needs nothing: it is written before read)."""
        for pools in self.layers + self.mtp:
            for state in (pools.state, pools.index_state):
                if state is not None:
                    state[0][slot].zero_()
                    state[1][slot].fill_(float("-inf"))

    # --- memory ---
    def tensors(self) -> list[torch.Tensor]:
        out = []
        for p in self.layers + self.mtp:
            out += [t for t in (p.window, p.entries, p.keys) if t is not None]
            out += [t for s in (p.state, p.index_state) if s is not None for t in s]
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def block_bytes(self) -> int:
        """Bytes of one block across all layers (the context-proportional part)."""
        return sum(t[0].numel() for p in self.layers + self.mtp for t in (p.entries, p.keys) if t is not None)

    def slot_bytes(self) -> int:
        """Bytes of one request slot across all layers (window + compressor state: the fixed part)."""
        return (self.nbytes() - self.num_blocks * self.block_bytes()) // self.max_requests

    # --- the model's view ---
    def view(self, slots: list[int], tables: list[list[int]] | list[torch.Tensor]) -> "PagedView":
        """tables: per request its block ids, as a list or as a 1-D long tensor on the cache's device (kept by the
        caller: a 1M-token request's 7,800 ids are not turned from Python ints into a tensor every step)."""
        return PagedView(self, slots, tables)

    def fixed_view(self, slot_ids: torch.Tensor, tables: torch.Tensor) -> "PagedView":
        """A decode batch with fixed shapes, for a compiled step: slot_ids [b] and tables [b, width] long tensors
        (rows padded with a spare slot and block, never -1), every row's entries read over the table's whole
        width. Builds no tensor from Python values and reads none back: it can be traced into a graph."""
        return PagedView(self, slot_ids, tables, fixed=True)


class PagedView:
    """A batch of requests (slots and block tables) seen as a `dsv4.model.ModelCache`."""

    def __init__(self, cache: PagedKVCache, slots: list[int] | torch.Tensor,
                 tables: list[list[int]] | list[torch.Tensor] | torch.Tensor, fixed: bool = False):
        """fixed: slots and tables are tensors [b], [b,width] (`PagedKVCache.fixed_view`)."""
        self.cache, self.batch_size = cache, len(slots)
        if fixed:
            slot_ids, table_ids = slots, tables
            self.capacities = [tables.size(1) * cache.block_size] * self.batch_size
        else:
            width = max(len(t) for t in tables)
            self.capacities = [len(t) * cache.block_size for t in tables]
            slot_ids = torch.tensor(slots, device=cache.device)
            if isinstance(tables[0], torch.Tensor):  # [b,width], -1 past a shorter row's end
                table_ids = tables[0][None] if len(tables) == 1 else \
                    torch.nn.utils.rnn.pad_sequence(tables, batch_first=True, padding_value=-1)
            else:
                table_ids = torch.tensor([t + [-1] * (width - len(t)) for t in tables], device=cache.device)
        self.capacity = min(self.capacities)
        self.layers = [self._layer(p, slot_ids, table_ids, fixed) for p in cache.layers]
        self.mtp = [self._layer(p, slot_ids, table_ids, fixed) for p in cache.mtp]

    def _layer(self, p: LayerPools, slots: torch.Tensor, tables: torch.Tensor, fixed: bool) -> LayerCache:
        c, dtype = self.cache, self.cache.dtype
        layer = LayerCache(window=SlotRows(p.window, slots, dtype, c.main))
        if p.entries is not None:
            layer.compressor = CompressorState(PagedEntries(p.entries, tables, dtype, c.main),
                                               *(SlotRows(s, slots, torch.float32) for s in p.state),
                                               static_entries=tables.size(1) * p.entries.size(1) if fixed else None)
        if p.keys is not None:
            layer.indexer = CompressorState(PagedEntries(p.keys, tables, dtype, c.index_key),
                                            *(SlotRows(s, slots, torch.float32) for s in p.index_state),
                                            static_entries=tables.size(1) * p.keys.size(1) if fixed else None)
        return layer

    def check(self, batch_size: int, start_pos: int | torch.Tensor, seqlen: int):
        """start_pos: shared by the rows, or one per row [b]."""
        if batch_size != self.batch_size:
            raise ValueError(f"batch size {batch_size} differs from the view's {self.batch_size} requests")
        if isinstance(start_pos, torch.Tensor):
            for i, (p, cap) in enumerate(zip(start_pos.tolist(), self.capacities, strict=True)):
                if p + seqlen > cap:
                    raise ValueError(f"row {i}: start_pos {p} + {seqlen} tokens exceeds the blocks allocated "
                                     f"({cap} tokens)")
        elif start_pos + seqlen > self.capacity:
            raise ValueError(f"start_pos {start_pos} + {seqlen} tokens exceeds the blocks allocated "
                             f"({self.capacity} tokens)")
