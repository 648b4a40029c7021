"""`ModelRunner`: executes a step's chunks on the model over the paged, packed KV cache.

Each running request holds a slot (its window ring and compressor state) and the blocks of its block table.
All decode chunks (one token each) run as one batch, each row at its own position; prefill chunks at the same
position and length run as one batch (equal prompts), others one call each.
"""

import torch

from dsv4.cache.block_manager import BlockManager
from dsv4.cache.paged import PagedKVCache
from dsv4.model import Transformer

from .config import EngineConfig
from .scheduler import Chunk


class ModelRunner:
    def __init__(self, model: Transformer, blocks: BlockManager, config: EngineConfig):
        self.model, self.blocks = model, blocks
        self.device = model.embed.weight.device
        self.cache = PagedKVCache(model.config, config.num_blocks, config.block_size, config.max_num_seqs,
                                  dtype=model.dtype, device=self.device, mtp=config.speculative)
        self.free_slots = list(range(config.max_num_seqs))
        self.slots: dict[int, int] = {}
        self.num_forward_calls = 0

    def run(self, chunks: list[Chunk]) -> torch.Tensor:
        """-> logits [number of sampling chunks, vocab] float32, in chunk order."""
        for c in chunks:
            if c.start == 0:  # a new request, or one preempted and now recomputed
                self.assign(c.seq.seq_id)
        groups: dict[tuple[int, int] | str, list[Chunk]] = {}
        for c in chunks:
            groups.setdefault("decode" if c.n == 1 else (c.start, c.n), []).append(c)
        logits: dict[int, torch.Tensor] = {}
        for group in groups.values():
            out = self._forward(group)  # [g,vocab]
            logits.update({c.seq.seq_id: row for c, row in zip(group, out, strict=True) if c.samples})
        rows = [logits[c.seq.seq_id] for c in chunks if c.samples]
        return torch.stack(rows) if rows else torch.empty(0, self.model.config.vocab_size)

    def _forward(self, group: list[Chunk]) -> torch.Tensor:
        """Chunks of equal length n, at one shared start or (n == 1) each at its own -> logits [g,vocab]."""
        ids = torch.tensor([c.seq.token_ids[c.start:c.start + c.n] for c in group], device=self.device)  # [g,n]
        starts = {c.start for c in group}
        start = starts.pop() if len(starts) == 1 else torch.tensor([c.start for c in group], device=self.device)
        self.num_forward_calls += 1
        return self.model(ids, cache=self.view([c.seq.seq_id for c in group]), start_pos=start)

    def view(self, seq_ids: list[int]):
        """The requests' slots and block tables as a model cache."""
        return self.cache.view([self.slots[i] for i in seq_ids], [self.blocks.table(i) for i in seq_ids])

    def assign(self, seq_id: int) -> int:
        """Gives the request a fresh slot (empty compressor state); returns it."""
        self.release(seq_id)
        slot = self.free_slots.pop()
        self.cache.reset_slot(slot)
        self.slots[seq_id] = slot
        return slot

    def release(self, seq_id: int):
        """Frees the request's slot (its blocks belong to the block manager)."""
        if seq_id in self.slots:
            self.free_slots.append(self.slots.pop(seq_id))
