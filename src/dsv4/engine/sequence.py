"""`Sequence`: one request's state (tokens, how many are in the cache, status) and what it has not handed out yet
(the new tokens and logprobs of its next `RequestDelta`)."""

from dataclasses import dataclass, field
from enum import Enum, auto

from .output import RequestDelta, RequestOutput, TokenLogprob
from .sampling_params import SamplingParams

__all__ = ["RequestDelta", "RequestOutput", "Sequence", "SequenceStatus", "TokenLogprob"]


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass(eq=False)
class Sequence:
    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    token_ids: list[int] = field(default_factory=list)  # prompt + generated
    num_computed: int = 0  # tokens whose KV is in the cache (set only by the scheduler)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    shared_until: int = 0  # prompt tokens likely shared with other requests (a prefill chunk ends at its block)
    lookahead: int = 0  # draft tokens a decode step may keep beyond the scheduled one (MTP speculation)
    num_emitted: int = 0  # len(token_ids) when the last delta was taken
    new_logprobs: list[TokenLogprob] = field(default_factory=list)  # of the tokens since then

    def __post_init__(self):
        if not self.prompt_ids:
            raise ValueError(f"request {self.seq_id}: the prompt is empty")
        self.token_ids = list(self.prompt_ids)
        self.num_emitted = max(self.num_emitted, len(self.prompt_ids))

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - len(self.prompt_ids)

    @property
    def output_ids(self) -> list[int]:
        """The generated ids (a copy: O(output); for the end of a request, not for every token)."""
        return self.token_ids[len(self.prompt_ids):]

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def max_len(self) -> int:
        return len(self.prompt_ids) + self.params.max_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def append(self, token_id: int, logprob: TokenLogprob | None = None):
        self.token_ids.append(token_id)
        if logprob is not None:
            self.new_logprobs.append(logprob)

    def take_delta(self, text: str) -> RequestDelta:
        """The tokens (and their logprobs) appended since the last delta, with `text`, the text they added."""
        new, self.num_emitted = self.token_ids[self.num_emitted:], len(self.token_ids)
        logprobs, self.new_logprobs = self.new_logprobs, []
        return RequestDelta(self.seq_id, new, text, logprobs if self.params.logprobs is not None else None,
                            self.finish_reason, self.stop_reason)
