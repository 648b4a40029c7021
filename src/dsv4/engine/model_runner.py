"""`ModelRunner`: executes a step's chunks on the model and returns the logits of the chunks that sample.

First step of the engine: each running request has its own `dsv4.model.ModelCache` (batch 1, sized for its
prompt + max_tokens), created when its first chunk (position 0) runs and dropped when it ends, and chunks run one
request at a time. The packed paged pools of `dsv4.cache` replace these caches in the next step.
"""

import torch

from dsv4.model import ModelCache, Transformer

from .scheduler import Chunk


class ModelRunner:
    def __init__(self, model: Transformer):
        self.model = model
        self.device = model.embed.weight.device
        self.caches: dict[int, ModelCache] = {}

    def run(self, chunks: list[Chunk]) -> torch.Tensor:
        """-> logits [number of sampling chunks, vocab] float32, in chunk order."""
        logits = []
        for c in chunks:
            if c.start == 0:  # a new request, or one preempted and recomputed
                self.caches[c.seq.seq_id] = self.model.new_cache(1, c.seq.max_len)
            ids = torch.tensor([c.seq.token_ids[c.start:c.start + c.n]], device=self.device)  # [1,n]
            out = self.model(ids, cache=self.caches[c.seq.seq_id], start_pos=c.start)  # [1,vocab]
            if c.samples:
                logits.append(out)
        return torch.cat(logits) if logits else torch.empty(0, self.model.config.vocab_size)

    def release(self, seq_id: int):
        self.caches.pop(seq_id, None)

    def cache_bytes(self) -> int:
        """Bytes held by the live per-request caches."""
        total = 0
        for cache in self.caches.values():
            for layer in cache.layers + cache.mtp:
                states = [s for s in (layer.compressor, layer.indexer) if s is not None]
                tensors = [layer.window] + [t for s in states for t in (s.entries, s.kv_state, s.score_state)]
                total += sum(t.numel() * t.element_size() for t in tensors)
        return total
