"""The one small interface between the HTTP server and whatever generates tokens.

`Backend` is what the server needs: tokenize a rendered prompt, stream a request's output, turn a token id into
its bytes (for logprobs), and its limits. `EngineBackend` serves it from an in-process `dsv4.engine.Engine`
(continuous batching across the server's concurrent requests, through `AsyncEngine`); `ProcessBackend` from an
engine in its own process (what `dsv4 serve` runs).
"""

from collections.abc import AsyncIterator
from typing import Protocol

from tokenizers import Tokenizer

from dsv4.engine import AsyncEngine, Engine, EngineConfig, RequestDelta, SamplingParams
from dsv4.engine.detokenizer import TokenBytes
from dsv4.engine.engine import encode_prompt, load_tokenizer
from dsv4.engine.generation_config import sampling_defaults
from dsv4.engine.process import EngineProcess

from .control_tokens import ControlTokens
from .prompt_bound import max_prompt_chars


class Backend(Protocol):
    model_name: str
    max_model_len: int  # prompt + completion tokens of one request at most
    max_prompt_chars: int | None  # a longer text prompt cannot fit (refused untokenized); None: unknown
    control_tokens: ControlTokens  # the tokenizer's special tokens, neutralised in chat text
    sampling_defaults: dict  # temperature / top_p / top_k for requests that leave them out (the checkpoint's own)

    def encode(self, prompt: str | list[int]) -> list[int]:
        """Text -> token ids; token ids are checked (ValueError naming the bad ones)."""
        ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestDelta]:
        """The request's deltas (new token ids, new text, their logprobs) as it runs; the last one has a
        finish_reason. Closing the iterator early cancels the request."""
        ...


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """A rendered prompt's token ids (no special tokens added: it spells its own). Through `encode_batch`, which
    lets go of the GIL while it works: `encode` holds it, and a 5 MB prompt (~7.5 s to tokenize) stalled every
    open stream and /health for that long, from a worker thread too."""
    return tokenizer.encode_batch([text], add_special_tokens=False)[0].ids


class EngineBackend:
    def __init__(self, engine: Engine, model_name: str):
        if engine.tokenizer is None:
            raise ValueError("serving chat needs the checkpoint's tokenizer.json; the engine has no tokenizer")
        self.engine, self.model_name = engine, model_name
        self.async_engine = AsyncEngine(engine)
        self.token_bytes = TokenBytes(engine.tokenizer)
        c = engine.config
        self.max_model_len = min(c.max_model_len, c.num_blocks * c.block_size)  # a request must fit in the cache
        self.max_prompt_chars = max_prompt_chars(engine.tokenizer, self.max_model_len)
        self.control_tokens = ControlTokens.of(engine.tokenizer)
        self.sampling_defaults = engine.sampling_defaults

    def encode(self, prompt: str | list[int]) -> list[int]:
        return encode_text(self.engine.tokenizer, prompt) if isinstance(prompt, str) else self.engine.encode(prompt)

    def stats(self):
        """The engine's `EngineStats` (read without the engine's lock: counters and queue lengths only)."""
        return self.engine.stats()

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestDelta]:
        return self.async_engine.stream(prompt_ids, params)


class ProcessBackend:
    """The engine in its own process (`EngineProcess`): the server's event loop and the engine's steps no longer
    share a GIL. Prompts are tokenized here, with the checkpoint's tokenizer."""

    def __init__(self, path_or_preset: str, config: EngineConfig | None, model_name: str, seed: int = 0):
        tokenizer, _ = load_tokenizer(path_or_preset)
        if tokenizer is None:
            raise ValueError("serving chat needs the checkpoint's tokenizer.json; there is none")
        self.tokenizer, self.model_name = tokenizer, model_name
        self.sampling_defaults = sampling_defaults(path_or_preset)
        self.token_bytes = TokenBytes(tokenizer)
        self.process = EngineProcess(path_or_preset, config, seed)
        self.max_model_len = self.process.info["max_model_len"]
        self.max_prompt_chars = max_prompt_chars(tokenizer, self.max_model_len)
        self.control_tokens = ControlTokens.of(tokenizer)

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return encode_text(self.tokenizer, prompt)
        return encode_prompt(self.tokenizer, self.process.info["vocab_size"], prompt)

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestDelta]:
        return self.process.stream(prompt_ids, params)

    def stats(self):
        """The engine's `EngineStats` as of its last step."""
        return self.process.stats

    @property
    def alive(self) -> bool:
        return self.process.alive

    def close(self):
        self.process.close()
