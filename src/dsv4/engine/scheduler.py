"""`Scheduler`: decides, each step, which tokens of which requests run (continuous batching).

Running requests go first, decodes before unfinished prefills, then waiting requests are admitted in arrival
order; every request gets min(its uncomputed tokens, what is left of the step's token budget), so long prompts
are prefilled in chunks. Room for a chunk is taken (from `RequestMemory`) before it runs; when blocks run out, the
most recently admitted running request is preempted (its blocks and slot freed, recomputed from the start later).
A speculating request's decode chunk also gets room for its draft (`Sequence.lookahead`) when blocks are free;
no request is preempted for a draft. `advance` is the one place a request's cached-token count moves forward.
"""

from collections import deque
from dataclasses import dataclass

from dsv4.cache.block_manager import CacheFull

from .request_memory import RequestMemory
from .sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 16
    """Running requests at most."""
    max_num_batched_tokens: int = 512
    """Token budget of one step (prefill chunks + decodes)."""
    align_prefill: int = 0
    """End prompt chunks at multiples of this many tokens (block boundaries, for prefix sharing; 0: off): as far
    as the budget reaches, at the last full block before `Sequence.shared_until` (where a chat prompt's last user
    turn begins: other requests likely share what comes before), and at the prompt's last full block. A request
    can share another's prefix up to one of those ends (or any block boundary reached while decoding)."""

    def __post_init__(self):
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")


@dataclass(frozen=True)
class Chunk:
    """Tokens seq.token_ids[start:start+n] at positions start.. run this step."""

    seq: Sequence
    start: int
    n: int

    @property
    def samples(self) -> bool:
        """The chunk reaches the sequence's last token, so its logits give the next token."""
        return self.start + self.n == len(self.seq)


class Scheduler:
    def __init__(self, config: SchedulerConfig, memory: RequestMemory):
        self.config, self.memory = config, memory
        self.blocks = memory.blocks  # read for counts; every change goes through `memory`
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence):
        self.check_fits(seq)
        self.waiting.append(seq)

    def check_fits(self, seq: Sequence):
        """Raises `CacheFull` for a request that could not fit even in an empty cache."""
        needed = self.blocks.blocks_for(seq.max_len)
        if needed > self.blocks.num_blocks:
            raise CacheFull(seq.seq_id, needed, self.blocks.num_free, self.blocks.num_blocks)

    def has_room(self) -> bool:
        return len(self.running) < self.config.max_num_seqs

    def resume(self, seq: Sequence, num_computed: int):
        """Admits a request whose first num_computed tokens are in the cache already (a prefix hit or a restored
        snapshot: its memory is in place) straight into the running set."""
        if len(self.running) >= self.config.max_num_seqs:
            raise CacheFull(seq.seq_id, 0, self.blocks.num_free, self.blocks.num_blocks)
        seq.status, seq.num_computed = SequenceStatus.RUNNING, num_computed
        self.running.append(seq)

    def is_finished(self) -> bool:
        return not self.waiting and not self.running

    def schedule(self) -> list[Chunk]:
        budget = self.config.max_num_batched_tokens
        chunks: list[Chunk] = []
        for seq in sorted(self.running, key=lambda s: s.num_uncomputed > 1):
            if budget == 0:
                break
            if seq.status != SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            n = self._chunk(seq, budget)
            if self._make_room(seq, n, scheduled={c.seq for c in chunks}):
                chunks.append(self._take(seq, n))
                budget -= n
        while self.waiting and budget and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            n = self._chunk(seq, budget)
            if not self.memory.can_grow(seq.seq_id, seq.num_computed + n):
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            chunks.append(self._take(seq, n))
            budget -= n
        return chunks

    def _chunk(self, seq: Sequence, budget: int) -> int:
        n = min(seq.num_uncomputed, budget)
        align, start = self.config.align_prefill, seq.num_computed
        if align and start < len(seq.prompt_ids):  # a prompt chunk: end at a block boundary
            end = start + n
            marks = [b for b in (seq.shared_until // align * align, len(seq.prompt_ids) // align * align)
                     if start < b < end]
            if marks:
                end = min(marks)
            elif end < len(seq.prompt_ids) and end // align * align > start:
                end = end // align * align
            n = end - start
        return n

    def _make_room(self, seq: Sequence, n: int, scheduled: set[Sequence]) -> bool:
        """Preempts the latest admitted other requests until `seq` can grow by n tokens; False if it had to
        preempt `seq` itself."""
        while not self.memory.can_grow(seq.seq_id, seq.num_computed + n):
            victims = [s for s in self.running if s is not seq and s not in scheduled]
            self.preempt(victims[-1] if victims else seq)
            if not victims:
                return False
        return True

    def _take(self, seq: Sequence, n: int) -> Chunk:
        end = seq.num_computed + n
        self.memory.grow(seq.seq_id, end)
        if seq.lookahead and end == len(seq):  # a decode that may keep draft tokens: room for them if it is free
            ahead = min(end + seq.lookahead, seq.max_len)
            if self.memory.can_grow(seq.seq_id, ahead):
                self.memory.grow(seq.seq_id, ahead)
        return Chunk(seq, seq.num_computed, n)

    def preempt(self, seq: Sequence):
        """Frees the request's memory and puts it first in the waiting queue, to be recomputed from scratch."""
        self.running.remove(seq)
        self.memory.release(seq.seq_id)
        seq.num_computed, seq.status = 0, SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def advance(self, c: Chunk, drafts: int = 0):
        """Records that chunk c ran: its tokens, and `drafts` accepted draft tokens after them (their KV written
        in the same forward), are in the cache now."""
        if drafts and not self.memory.covers(c.seq.seq_id, c.start + c.n + drafts):
            raise RuntimeError(f"request {c.seq.seq_id}: {drafts} draft token(s) kept beyond its reserved blocks")
        c.seq.num_computed = c.start + c.n + drafts

    def finish(self, seq: Sequence, reason: str):
        """Ends a request (finished or aborted) wherever it is, freeing its memory at once."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.memory.release(seq.seq_id)
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason
