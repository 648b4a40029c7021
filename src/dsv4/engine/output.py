"""What the engine hands out: a `RequestDelta` per request per step (what that step added), and the cumulative
`RequestOutput`, built only by a caller that wants it, through an `OutputAccumulator`.

Deltas keep the per-token cost of a request independent of its length: a step copies only its new tokens, text
and logprobs, never the prompt or the output so far (at 1M tokens of context a whole-output copy per token costs
milliseconds). Concatenating a request's deltas gives its final output exactly.
"""

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: dict[int, float] = field(default_factory=dict)  # the most likely alternatives: token id -> logprob


@dataclass
class RequestDelta:
    """What one step added to one request."""

    request_id: int
    token_ids: list[int]  # the new ids (a final EOS / stop token id included)
    text: str  # the new text: what the request's text grew by (it never shrinks; held-back tails come later)
    logprobs: list[TokenLogprob] | None = None  # the new tokens' logprobs; None when the request asked for none
    finish_reason: str | None = None  # set on the request's last delta (see `RequestOutput.finish_reason`)
    stop_reason: str | int | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


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


class OutputAccumulator:
    """A request's deltas summed up. Adding a delta costs what the delta holds; the text is joined only when read
    (`text`, `output()`), so a caller that only counts tokens or watches the finish reason never copies it."""

    def __init__(self, request_id: int, prompt_token_ids: list[int], logprobs: bool = False):
        self.request_id, self.prompt_token_ids = request_id, prompt_token_ids  # the caller's list, not copied
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if logprobs else None
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self._pieces: list[str] = []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        if len(self._pieces) > 1:  # joined once; later reads and adds start from the joined text
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def add(self, delta: RequestDelta) -> "OutputAccumulator":
        if self.finished:
            raise ValueError(f"request {self.request_id} already finished ({self.finish_reason}); got another delta")
        self.token_ids += delta.token_ids
        if delta.text:
            self._pieces.append(delta.text)
        if self.logprobs is not None and delta.logprobs:
            self.logprobs += delta.logprobs
        self.finish_reason, self.stop_reason = delta.finish_reason, delta.stop_reason
        return self

    def output(self) -> RequestOutput:
        """The cumulative view so far (its lists are copies: later deltas do not change it)."""
        return RequestOutput(self.request_id, self.prompt_token_ids, list(self.token_ids), self.text,
                             self.finish_reason, list(self.logprobs) if self.logprobs is not None else None,
                             self.stop_reason)
