"""`ModelRunner`: executes a step's chunks on the model over the paged, packed KV cache.

Each running request holds a slot (its window ring and compressor state) and the blocks of its block table.
Chunks at the same position and length run as one batch (decodes of requests in step, equal prompts); others
run one call each, since the model takes a single start position per call.
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
        groups: dict[tuple[int, int], list[Chunk]] = {}
        for c in chunks:
            groups.setdefault((c.start, c.n), []).append(c)
        logits: dict[int, torch.Tensor] = {}
        for (start, n), group in groups.items():
            out = self._forward(group, start, n)  # [g,vocab]
            logits.update({c.seq.seq_id: row for c, row in zip(group, out, strict=True) if c.samples})
        rows = [logits[c.seq.seq_id] for c in chunks if c.samples]
        return torch.stack(rows) if rows else torch.empty(0, self.model.config.vocab_size)

    def _forward(self, group: list[Chunk], start: int, n: int) -> torch.Tensor:
        ids = torch.tensor([c.seq.token_ids[start:start + n] for c in group], device=self.device)  # [g,n]
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
