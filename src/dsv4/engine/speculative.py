"""`MTPSpeculator`: MTP speculative decoding for greedy requests, one draft token per step.

Every position the main model computes (and keeps) also goes through the MTP layer with the token that follows
it, so the MTP layer's own window stays complete; its prediction at the last position is the draft. A decode step
runs [last token, draft] in one forward: if the main model's argmax at the last token equals the draft, both the
draft and the main model's next token are kept (2 tokens for one forward); otherwise the request's slot (window
and compressor state) is restored from before the step and the known tokens are recomputed alone. Output equals
plain greedy decoding either way.

Verification is one forward per request. Under load (more decoding requests than `speculative_max_batch`), the
requests decode as one batch instead (`run_batch`): no draft is verified, but the MTP layer still runs on each new
token, so its window stays complete and a fresh draft is ready when load drops. With a compiled decode step
(EngineConfig.compile) that batch is one graph, the MTP layer included; verification (2 tokens a request) is eager.
"""

import torch

from .model_runner import ModelRunner
from .request_memory import RequestMemory
from .scheduler import Chunk


class MTPSpeculator:
    def __init__(self, runner: ModelRunner, memory: RequestMemory):
        if not memory.cache.mtp:
            raise ValueError("speculative decoding needs a cache with MTP layers (EngineConfig.speculative=True)")
        self.runner, self.memory, self.model = runner, memory, runner.model
        self.drafts: dict[int, int] = {}
        self.drafted = self.accepted = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def release(self, seq_id: int):
        self.drafts.pop(seq_id, None)

    def run(self, c: Chunk) -> list[int]:
        """Runs chunk c of a greedy request (its slot and blocks in place, room for a draft reserved by the
        scheduler when it was free); returns the new tokens (none before the chunk that reaches the end, then 1,
        or 2 when the draft was right)."""
        seq, model = c.seq, self.model
        draft = self.drafts.pop(seq.seq_id, None) if c.samples else None
        if draft is not None and not self._room(c):
            draft = None
        ids = seq.token_ids[c.start:c.start + c.n] + ([draft] if draft is not None else [])
        saved = self.memory.save_slot(seq.seq_id) if draft is not None else None
        view = self.runner.view([seq.seq_id])
        h = model.hidden(self._tensor(ids), view, c.start)  # [1,m,hc,d]
        self.runner.num_forward_calls += 1
        new = []
        if c.samples:
            logits = model.logits(h[:, c.n - 1:])[0]  # [1 or 2, vocab]
            new = [int(logits[0].argmax())]
            if draft is not None:
                self.drafted += 1
                if new[0] == draft:
                    self.accepted += 1
                    new.append(int(logits[1].argmax()))
                else:  # undo the draft position: restore the slot, recompute the known tokens alone
                    self.memory.restore_slot(seq.seq_id, saved)
                    h = model.hidden(self._tensor(ids[:c.n]), view, c.start)
                    self.runner.num_forward_calls += 1
        m = c.n + max(0, len(new) - 1)  # positions computed and kept
        # the token after each kept position (a slice: copying token_ids + new would cost O(context) per step)
        next_ids = (seq.token_ids[c.start + 1:c.start + m + 1] + new)[:m]
        mtp = model.mtp_logits(h[:, :m], self._tensor(next_ids), view, c.start)  # [1,m,vocab]
        if c.samples:
            self.drafts[seq.seq_id] = int(mtp[0, -1].argmax())
        return new

    def run_batch(self, chunks: list[Chunk]) -> list[int]:
        """Decode chunks (one token each, at the end of their requests) as one batch -> each one's new token."""
        seqs = [c.seq for c in chunks]
        for seq in seqs:
            self.drafts.pop(seq.seq_id, None)  # drafted for a verification that does not come
        self.runner.num_forward_calls += 1
        graph = self.runner.graph
        if graph is not None:  # the compiled decode step, with the MTP layer in the same graph
            m = self.memory
            logits, mtp = graph.drafting([seq.token_ids[c.start] for seq, c in zip(seqs, chunks, strict=True)],
                                         [c.start for c in chunks], [m.slots[s.seq_id] for s in seqs],
                                         [m.tables[s.seq_id] for s in seqs])
            new = logits.argmax(-1)
        else:
            device = self.runner.device
            ids = torch.tensor([[seq.token_ids[c.start]] for seq, c in zip(seqs, chunks, strict=True)], device=device)
            pos = torch.tensor([c.start for c in chunks], device=device)
            view = self.runner.view([seq.seq_id for seq in seqs])
            h = self.model.hidden(ids, view, pos)  # [b,1,hc,d]
            new = self.model.logits(h)[:, -1].argmax(-1)  # [b]
            mtp = self.model.mtp_logits(h, new[:, None], view, pos)[:, -1]  # [b,vocab]
        for seq, draft in zip(seqs, mtp.argmax(-1).tolist(), strict=True):
            self.drafts[seq.seq_id] = draft
        return new.tolist()

    def _room(self, c: Chunk) -> bool:
        """A draft needs one more token of max_tokens, and of blocks (reserved by the scheduler, if free)."""
        seq = c.seq
        return seq.params.max_tokens - seq.num_output >= 2 and self.memory.covers(seq.seq_id, c.start + c.n + 1)

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.runner.device)  # [1,s]
