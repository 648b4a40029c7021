"""`Sequence`: one request's state (tokens, how many are in the cache, status) and its `RequestOutput`."""

from dataclasses import dataclass, field
from enum import Enum, auto

from .sampling_params import SamplingParams


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: dict[int, float] = field(default_factory=dict)  # the most likely alternatives: token id -> logprob


@dataclass
class RequestOutput:
    request_id: int
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated ids (a final EOS / stop token id included)
    text: str  # decoded generated text, without a final EOS / stop token and cut before a stop string
    finish_reason: str | None  # "stop" (EOS, stop id or string), "length", "abort", "error" (its step raised);
    # None while running
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it (None for EOS)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(eq=False)
class Sequence:
    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    token_ids: list[int] = field(default_factory=list)  # prompt + generated
    num_computed: int = 0  # tokens whose KV is in the cache
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    stop_reason: str | int | None = None
    shared_until: int = 0  # prompt tokens likely shared with other requests (a prefill chunk ends at its block)

    def __post_init__(self):
        if not self.prompt_ids:
            raise ValueError(f"request {self.seq_id}: the prompt is empty")
        self.token_ids = list(self.prompt_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
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
            self.logprobs.append(logprob)

    def output(self) -> RequestOutput:
        return RequestOutput(self.seq_id, list(self.prompt_ids), self.output_ids, self.text, self.finish_reason,
                             list(self.logprobs) if self.params.logprobs is not None else None, self.stop_reason)
