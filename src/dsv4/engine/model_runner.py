"""`ModelRunner`: executes a step's chunks on the model over the paged, packed KV cache.

Each running request's memory (its slot: window ring and compressor state, and the blocks of its block table) is
`RequestMemory`'s; the runner only reads views of it. All decode chunks (one token each) run as one batch, each
row at its own position; prefill chunks at the same position and length run as one batch (equal prompts), others
one call each. With a `DecodeGraph` (EngineConfig.compile), the decode batch runs as its compiled graph.
"""

import torch

from dsv4.model import Transformer

from .decode_graph import DecodeGraph
from .request_memory import RequestMemory
from .scheduler import Chunk


class ModelRunner:
    def __init__(self, model: Transformer, memory: RequestMemory, graph: DecodeGraph | None = None):
        self.model, self.memory, self.cache, self.graph = model, memory, memory.cache, graph
        self.device = model.embed.weight.device
        self.num_forward_calls = 0

    def run(self, chunks: list[Chunk]) -> torch.Tensor:
        """-> logits [number of sampling chunks, vocab] float32, in chunk order."""
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
        if self.graph is not None and group[0].n == 1:
            self.num_forward_calls += 1
            m = self.memory
            return self.graph([c.seq.token_ids[c.start] for c in group], [c.start for c in group],
                              [m.slots[c.seq.seq_id] for c in group], [m.tables[c.seq.seq_id] for c in group])
        ids = torch.tensor([c.seq.token_ids[c.start:c.start + c.n] for c in group], device=self.device)  # [g,n]
        starts = {c.start for c in group}
        start = starts.pop() if len(starts) == 1 else torch.tensor([c.start for c in group], device=self.device)
        self.num_forward_calls += 1
        return self.model(ids, cache=self.view([c.seq.seq_id for c in group]), start_pos=start)

    def view(self, seq_ids: list[int]):
        """The requests' slots and block tables as a model cache."""
        return self.memory.view(seq_ids)
