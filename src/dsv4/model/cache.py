"""A straightforward per-sequence-batch cache: per layer a window ring buffer, compressed entries and the
compressor's unfinished-block state (the reference's buffers, owned by a cache object instead of the modules).
The packed deployed layout belongs to `dsv4.cache`."""

from dataclasses import dataclass

import torch

from .config import ModelConfig


@dataclass
class CompressorState:
    """Compressed entries plus the projected kv / gate scores of tokens not yet compressed.

    Overlapping form (ratio 4): state slots [0, ratio) hold the previous complete block, [ratio, 2·ratio) the
    current one, each `2·head_dim` wide. Plain form: slots [0, ratio) hold the current block."""

    entries: torch.Tensor  # [b, ceil(max_seq_len / ratio), head_dim]
    kv_state: torch.Tensor  # [b, coff·ratio, coff·head_dim] float32
    score_state: torch.Tensor  # [b, coff·ratio, coff·head_dim] float32, -inf = empty
    static_entries: int | None = None
    """Entries every row of a decode step is read over (the block table's fixed width, for a step compiled with
    static shapes), visible or not; None: as many as the row with the most has (a host read of their count)."""

    @classmethod
    def new(cls, batch_size: int, max_seq_len: int, ratio: int, head_dim: int, dtype, device):
        coff = 2 if ratio == 4 else 1
        shape = (batch_size, coff * ratio, coff * head_dim)
        return cls(
            # room for the open block's entry too: a decode step writes its partial pool there (Compressor.step)
            entries=torch.zeros(batch_size, -(-max_seq_len // ratio), head_dim, dtype=dtype, device=device),
            kv_state=torch.zeros(shape, dtype=torch.float32, device=device),
            score_state=torch.full(shape, float("-inf"), dtype=torch.float32, device=device),
        )


@dataclass
class LayerCache:
    window: torch.Tensor  # [b, window_size, head_dim] ring buffer, slot = pos % window_size
    compressor: CompressorState | None = None
    indexer: CompressorState | None = None


class ModelCache:
    """All layers' caches for `batch_size` sequences of up to `max_seq_len` tokens."""

    def __init__(self, config: ModelConfig, batch_size: int, max_seq_len: int, dtype=torch.float32,
                 device=None):
        if batch_size <= 0 or max_seq_len <= 0:
            raise ValueError(f"batch_size={batch_size} and max_seq_len={max_seq_len} must be positive")
        self.batch_size, self.max_seq_len = batch_size, max_seq_len
        self.layers = [self._layer(config, i, dtype, device) for i in range(config.n_layers)]
        self.mtp = [self._layer(config, config.n_layers + i, dtype, device) for i in range(config.n_mtp_layers)]

    def _layer(self, config: ModelConfig, layer_id: int, dtype, device) -> LayerCache:
        b, n, d = self.batch_size, self.max_seq_len, config.head_dim
        cache = LayerCache(window=torch.zeros(b, config.window_size, d, dtype=dtype, device=device))
        ratio = config.compress_ratio(layer_id)
        if ratio:
            cache.compressor = CompressorState.new(b, n, ratio, d, dtype, device)
        if ratio == 4:
            cache.indexer = CompressorState.new(b, n, ratio, config.index_head_dim, dtype, device)
        return cache

    def check(self, batch_size: int, start_pos: int | torch.Tensor, seqlen: int):
        if batch_size > self.batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the cache's batch_size={self.batch_size}")
        if isinstance(start_pos, torch.Tensor):
            start_pos = int(start_pos.max())
        if start_pos + seqlen > self.max_seq_len:
            raise ValueError(f"start_pos {start_pos} + {seqlen} tokens exceeds the cache's "
                             f"max_seq_len={self.max_seq_len}")
