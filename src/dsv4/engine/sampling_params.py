"""`SamplingParams`: how one request picks its tokens and when it stops."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Grammar:
    """What a request's output must match, enforced token by token (`dsv4.engine.constraint`).

    The request's length limit is kept: once `reasoning_end` is due (see `constraint.py`), reasoning is closed,
    and when the tokens left are about the shortest way to finish, the engine finishes it that way, so a
    constrained output is complete, not cut off by max_tokens."""

    lark: str
    """The grammar, in llguidance's Lark dialect (`%json` for JSON schemas, `<[id]>` for special tokens)."""
    reasoning_end: str | None = None
    """Text that closes the free reasoning the grammar starts with (None: it starts with none)."""
    reasoning_room: int = 0
    """Tokens of max_tokens kept for what follows the reasoning: it is closed once only this many are left."""
    raw_spans: tuple[tuple[str, str], ...] = ()
    """(opener, closer) of free-text spans in the grammar: an open one is finished by writing its closer."""
    finish_from: str = ""
    """The engine finishes the output within max_tokens once it holds this text ("": from the start). A reply
    that may stay free text (strict tools under tool_choice "auto") is finished only inside its tool-call block:
    free text cut short by an EOS of the engine's would read as a complete answer."""

    def __post_init__(self):
        object.__setattr__(self, "raw_spans", tuple(tuple(s) for s in self.raw_spans))
        if self.reasoning_room < 0:
            raise ValueError(f"reasoning_room must be >= 0; got {self.reasoning_room}")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    """0 = greedy (argmax)."""
    top_p: float = 1.0
    """Keep the smallest set of top tokens whose probability reaches top_p (1 = all)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = all)."""
    seed: int | None = None
    """Seed of this request's own generator (None: drawn at random)."""
    max_tokens: int = 256
    """Generated tokens at most."""
    stop: tuple[str, ...] = ()
    """Stop strings: generation ends when the text contains one; the text is cut before it."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end generation (kept in token_ids, left out of text)."""
    ignore_eos: bool = False
    """Keep generating after the model's EOS token."""
    logprobs: int | None = None
    """Return the sampled token's log-probability and the `logprobs` most likely alternatives (None: off)."""
    grammar: Grammar | None = None
    """Constrain the output to a grammar (None: free). Such requests are not speculated."""

    def __post_init__(self):
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if isinstance(self.grammar, dict):  # from a snapshot's metadata (dataclasses.asdict)
            object.__setattr__(self, "grammar", Grammar(**self.grammar))
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0; got {self.top_k}")
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive; got {self.max_tokens}")
        if any(not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty; got {self.stop!r}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be None or >= 0; got {self.logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
