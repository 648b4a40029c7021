"""The one small interface between the HTTP server and whatever generates tokens.

`Backend` is what the server needs: tokenize a rendered prompt, stream a request's output, turn a token id into
its bytes (for logprobs), and its limits. `EngineBackend` serves it from an in-process `dsv4.engine.Engine`
(continuous batching across the server's concurrent requests, through `AsyncEngine`).
"""

from collections.abc import AsyncIterator
from typing import Protocol

from dsv4.engine import AsyncEngine, Engine, RequestOutput, SamplingParams
from dsv4.engine.detokenizer import TokenBytes


class Backend(Protocol):
    model_name: str
    max_model_len: int  # prompt + completion tokens of one request at most

    def encode(self, prompt: str | list[int]) -> list[int]:
        """Text -> token ids; token ids are checked (ValueError naming the bad ones)."""
        ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        """The request's output after each new token (all tokens so far); the last one has a finish_reason.
        Closing the iterator early cancels the request."""
        ...


class EngineBackend:
    def __init__(self, engine: Engine, model_name: str):
        if engine.tokenizer is None:
            raise ValueError("serving chat needs the checkpoint's tokenizer.json; the engine has no tokenizer")
        self.engine, self.model_name = engine, model_name
        self.async_engine = AsyncEngine(engine)
        self.token_bytes = TokenBytes(engine.tokenizer)
        c = engine.config
        self.max_model_len = min(c.max_model_len, c.num_blocks * c.block_size)  # a request must fit in the cache

    def encode(self, prompt: str | list[int]) -> list[int]:
        return self.engine.encode(prompt)

    def stats(self):
        """The engine's `EngineStats` (read without the engine's lock: counters and queue lengths only)."""
        return self.engine.stats()

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        return self.async_engine.stream(prompt_ids, params)
