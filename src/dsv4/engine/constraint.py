"""`Constraint`: one request's grammar matcher (llguidance), the token mask of its next step, and how it finishes
within the length limit.

Masks off the critical path: after a request takes a token, the mask of its next token is computed on a worker
thread (llguidance drops the GIL while it computes) while the engine runs the next forward; the sampler only
waits for it. Each request has its own matcher, so a batch mixes constrained and free requests freely.

Finishing within max_tokens (a constrained output is never cut off by the length limit):
- Reasoning: with `Grammar.reasoning_end`, the engine writes that text (e.g. `</think>`) itself once the tokens
  left reach `max(reasoning_room, the shortest finish + margin)`; reasoning thus takes at most
  `max_tokens - reasoning_room` tokens, as Anthropic's `budget_tokens` bounds thinking, and what follows it
  (a required tool call, a JSON reply) keeps `reasoning_room` tokens.
- The rest: when the tokens left come near the length of the shortest finish the engine knows from the current
  state (`finish_plan`: close an open raw span with its closer, else prefer `"` `}` `]` `,` `0` and EOS, else the
  lowest allowed token), it follows that plan to the end. The plan is looked for only near the limit.
"""

import functools
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import llguidance.numpy  # not llguidance.torch: its import decorates with torch.compile, which loads inductor
import torch
from tokenizers import Tokenizer

from .sampling_params import Grammar

PLAN_LIMIT = 512  # a finish longer than this is not looked for


class GrammarError(ValueError):
    """The request's grammar does not compile (unsupported schema, bad Lark)."""


@functools.lru_cache(maxsize=4)
def ll_tokenizer(tokenizer_json: str, vocab_size: int, eos: int) -> llguidance.LLTokenizer:
    """llguidance's tokenizer, shared by the engines of one process that have the same tokenizer."""
    return llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos)


class GrammarTokenizer:
    """The engine's tokenizer as llguidance sees it; built once, on first use (a 129K vocabulary takes seconds)."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_token_id: int):
        self.tokenizer, self.vocab_size, self.eos = tokenizer, vocab_size, eos_token_id
        self._lock = threading.Lock()
        self._ll: llguidance.LLTokenizer | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="dsv4-grammar")

    def warm(self):
        """Starts building the llguidance tokenizer on the worker thread."""
        self.executor.submit(lambda: self.ll)

    @property
    def ll(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._ll is None:
                self._ll = ll_tokenizer(self.tokenizer.to_str(), self.vocab_size, self.eos)
            return self._ll

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def text(self, ids: list[int]) -> bytes:
        """The tokens' text, special tokens spelled out (llguidance's own decoding leaves them out)."""
        return self.tokenizer.decode(ids, skip_special_tokens=False).encode()

    @functools.cache  # noqa: B019  (one per engine, which keeps it)
    def char_ids(self) -> list[int]:
        """The tokens of single printable ASCII characters and newline, in code order."""
        return [t for c in "\n" + "".join(map(chr, range(32, 127))) if (t := self.single(c)) is not None]

    def single(self, text: str) -> int | None:
        return ids[0] if len(ids := self.ids(text)) == 1 else None

    def closer_ids(self, spans: tuple[tuple[str, str], ...]) -> list[list[int]]:
        """Outside a JSON string: EOS, `}`, `]`, the spans' closers (they also end a JSON value written between
        span-like tags), `,`, `"` (a string or key the schema requires), `0`."""
        close, sep = [[t] for c in ("}", "]") if (t := self.single(c)) is not None], \
            [[t] for c in (",", '"', "0") if (t := self.single(c)) is not None]
        return [[self.eos]] + close + [self.ids(closer) for _, closer in spans] + sep


class Constraint:
    def __init__(self, grammar: Grammar, tokens: GrammarTokenizer, max_tokens: int):
        self.grammar, self.tokens, self.max_tokens = grammar, tokens, max_tokens
        self.matcher = llguidance.LLMatcher(tokens.ll, grammar.lark, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(f"the grammar does not compile: {self.matcher.get_error()}")
        self.text = b""  # the output so far (a token that holds part of a character adds U+FFFD)
        self.generated = 0
        self.plan: deque[int] = deque()
        self.estimate = 0  # length of the last finish plan looked for
        self.finishing = not grammar.finish_from  # finished within max_tokens from here on (Grammar.finish_from)
        self._bitmask = new_bitmask(tokens.vocab_size)
        self._future: Future | None = None
        self.prefetch()
        # the shortest finish from the start tells when to look again (on the worker, after the first mask)
        self._estimating: Future | None = tokens.executor.submit(self._first_estimate)

    def _first_estimate(self):
        plan = self.finish_plan()
        self.estimate = len(plan) if plan is not None else PLAN_LIMIT

    # --- masks ---
    def prefetch(self):
        """Starts computing the next token's mask on the worker thread."""
        if not self.matcher.is_stopped():
            self._future = self.tokens.executor.submit(fill_bitmask, self.matcher, self._bitmask)

    def allowed(self) -> torch.Tensor:
        """[vocab] bool: the tokens the next step may take (one, when the engine is finishing the output)."""
        self._settle()
        if not self.plan:
            self._maybe_plan()
        vocab = self.tokens.vocab_size
        if self.plan:
            out = torch.zeros(vocab, dtype=torch.bool)
            out[self.plan[0]] = True
            return out
        return unpack(self._bitmask[0], vocab)

    def _settle(self):
        """Waits for the worker's work on this matcher (a matcher is used by one thread at a time)."""
        for future in (self._future, self._estimating):
            if future is not None:
                future.result()
        self._future = self._estimating = None

    # --- advancing ---
    def advance(self, token: int) -> bool:
        """Takes the sampled token; False if the grammar refuses it (the output then cannot be completed)."""
        self._settle()
        if self.plan and self.plan[0] == token:
            self.plan.popleft()
        else:
            self.plan.clear()
        if not self.matcher.consume_token(token):
            return False
        self.text += self.tokens.text([token])
        self.generated += 1
        self.prefetch()
        return True

    def replay(self, tokens: list[int]) -> bool:
        """Takes tokens generated before this matcher existed (a resumed request)."""
        return all(self.advance(t) for t in tokens)

    # --- finishing in time ---
    def in_reasoning(self, text: bytes) -> bool:
        end = self.grammar.reasoning_end
        return end is not None and end.encode() not in text

    def open_span(self, text: bytes) -> str | None:
        """The closer of the raw span the output is in, if any."""
        for opener, closer in self.grammar.raw_spans:
            at = text.rfind(opener.encode())
            if at >= 0 and closer.encode() not in text[at + len(opener.encode()):]:
                return closer
        return None

    def in_json_string(self, text: bytes) -> bool:
        """Whether the output ends inside a JSON string: an odd count of unescaped quotes after the reasoning,
        raw spans' contents left out (the grammars' tags quote their attributes in pairs)."""
        if (end := self.grammar.reasoning_end) is not None:
            text = text.split(end.encode(), 1)[-1]
        for opener, closer in self.grammar.raw_spans:
            parts = text.split(opener.encode())
            text = parts[0] + b"".join(p.split(closer.encode(), 1)[1] if closer.encode() in p else b""
                                       for p in parts[1:])
        quotes, escaped = 0, False
        for byte in text:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                quotes += 1
        return quotes % 2 == 1

    def finish_plan(self) -> list[int] | None:
        """The tokens of a short way to finish from here (to EOS), or None if none is found within PLAN_LIMIT."""
        m, text, out = self.matcher.deep_copy(), self.text, []
        closers, quote = self.tokens.closer_ids(self.grammar.raw_spans), self.tokens.single('"')
        mask = new_bitmask(self.tokens.vocab_size)
        while not m.is_stopped() and len(out) < PLAN_LIMIT:
            if self.in_reasoning(text):
                candidates = [self.tokens.ids(self.grammar.reasoning_end)]
            elif (closer := self.open_span(text)) is not None:
                candidates = [self.tokens.ids(closer)]
            elif self.in_json_string(text):
                candidates = [[quote]]
            else:
                candidates = closers
            step = m.compute_ff_tokens() or next((c for c in candidates if self._takes(m, c)), None)
            if not step:  # a single character, else the lowest allowed token (a whole mask: the costly way)
                step = next(([t] for t in self.tokens.char_ids() if m.validate_tokens([t]) == 1), None)
            if not step:
                fill_bitmask(m, mask)
                allowed = unpack(mask[0], self.tokens.vocab_size).nonzero()
                if not len(allowed):
                    return None
                step = [int(allowed[0])]
            if not m.consume_tokens(step):
                raise RuntimeError(f"finish plan: {m.get_error()}")
            out += step
            text += self.tokens.text(step)
        return out if m.is_stopped() else None

    def _takes(self, m: llguidance.LLMatcher, tokens: list[int]) -> bool:
        if tokens == [self.tokens.eos]:  # validate_tokens never counts EOS, even where the grammar allows it
            return m.deep_copy().consume_token(self.tokens.eos)
        return m.validate_tokens(tokens) == len(tokens)

    def _maybe_plan(self):
        """Adopts a finish plan once the tokens left come near its length (a margin covers the jump one token
        can make: opening an object with several required properties). Plans are looked for only near the limit:
        every 8 tokens from twice the last plan's length, every token from its length + margin + 8."""
        if not self.finishing:
            if self.grammar.finish_from.encode() not in self.text:
                return
            self.finishing = True  # the output just reached where finishing starts: its shortest finish from here
            self._first_estimate()
        left = self.max_tokens - self.generated
        reasoning = self.in_reasoning(self.text)
        near = left <= self.estimate + margin(self.estimate) + 8 or (reasoning and left <= self.grammar.reasoning_room)
        if not near and (left > 2 * self.estimate + 16 or left % 8):
            return
        plan = self.finish_plan()
        if plan is None:
            return
        self.estimate = len(plan)
        if reasoning:
            if left <= max(self.grammar.reasoning_room, len(plan) + margin(len(plan))):
                # the plan up to its reasoning end (it first completes a character split between tokens)
                end = self.tokens.ids(self.grammar.reasoning_end)
                at = next(i for i in range(len(plan)) if plan[i:i + len(end)] == end)
                self.plan.extend(plan[:at + len(end)])
        elif left <= len(plan) + margin(len(plan)):
            self.plan.extend(plan)


def margin(n: int) -> int:
    return 4 + n // 2


_BITS = torch.arange(32, dtype=torch.int32)


def new_bitmask(vocab: int) -> torch.Tensor:
    """llguidance's token bitmask for one row: [1, ceil(vocab/32)] int32, every token allowed."""
    return torch.full((1, (vocab + 31) // 32), -1, dtype=torch.int32)


def fill_bitmask(matcher: llguidance.LLMatcher, bitmask: torch.Tensor) -> None:
    """The matcher's next-token mask, written into `bitmask` (through a numpy view of the same memory)."""
    llguidance.numpy.fill_next_token_bitmask(matcher, bitmask.numpy(), 0)


def unpack(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """llguidance's int32 bitmask [ceil(vocab/32)] -> bool [vocab]."""
    return ((bitmask.unsqueeze(-1) >> _BITS) & 1).bool().flatten()[:vocab]


def grammar_error(lark: str) -> str | None:
    """Why a grammar does not compile (its first error, with the line), or None if it does."""
    return llguidance.LLMatcher.validate_grammar(lark) or None
