"""The client protocol: one chat completion from any V4 endpoint, and `OpenAIClient` for OpenAI-compatible ones
(`dsv4 serve`, DeepSeek's API, vLLM, SGLang).

A long agent run must outlive a flaky connection: transport errors, 429 and 5xx answers are retried with
exponential backoff; a request the endpoint refuses (4xx) is not, and its error message is kept. A 400 saying the
context is exceeded raises `ContextExhausted`, so the run ends with that status rather than a generic error.
"""

import time
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from .errors import ClientError, ContextExhausted
from .messages import Message


@dataclass
class Completion:
    message: Message  # the assistant turn
    finish_reason: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    warnings: list[dict] = field(default_factory=list)  # the endpoint's recoveries (dsv4 serve: x_dsv4_warnings)


class ChatClient(Protocol):
    model: str

    def complete(self, messages: list[Message], tools: list[dict]) -> Completion: ...


class OpenAIClient:
    """POSTs to `{base_url}/chat/completions`. `extra` goes into every request body (e.g. `thinking`,
    `reasoning_effort`, `temperature`, `max_tokens`)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, extra: dict | None = None,
                 timeout: float = 3600.0, retries: int = 4, backoff_s: float = 1.0, http: httpx.Client | None = None):
        self.base_url, self.model, self.extra = base_url.rstrip("/"), model, dict(extra or {})
        self.url = self.base_url + "/chat/completions"
        self.retries, self.backoff_s = retries, backoff_s
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        # a long prompt on a slow machine takes minutes to prefill: a generous read timeout, a short connect one
        self.http = http or httpx.Client(timeout=httpx.Timeout(timeout, connect=30.0), headers=headers)

    def complete(self, messages: list[Message], tools: list[dict]) -> Completion:
        body = {"model": self.model, "messages": [m.wire() for m in messages], **self.extra}
        if tools:
            body["tools"] = tools  # on every request: without them the encoder drops the loop's reasoning
        data = self._post(body)
        try:
            choice = data["choices"][0]
            msg = choice["message"]
            message = Message(role="assistant", content=msg.get("content"),
                              reasoning_content=msg.get("reasoning_content"), tool_calls=msg.get("tool_calls") or None)
            return Completion(message, choice.get("finish_reason") or "stop", data.get("usage") or {},
                              list(data.get("x_dsv4_warnings") or []))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ClientError(f"the endpoint's answer is not a chat completion ({e!r}): {str(data)[:300]}") from e

    def _post(self, body: dict) -> dict:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self.http.post(self.url, json=body)
            except httpx.TransportError as e:
                if last:
                    raise ClientError(f"{self.url}: {type(e).__name__}: {e}") from e
            else:
                if r.status_code == 200:
                    return r.json()
                error = _error_of(r)
                if r.status_code == 400 and ("context_length_exceeded" in error or "context length" in error):
                    raise ContextExhausted(error, r.status_code)
                if last or not (r.status_code == 429 or r.status_code >= 500):
                    raise ClientError(f"{self.url}: HTTP {r.status_code}: {error}", r.status_code)
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")


def _error_of(r: httpx.Response) -> str:
    try:
        error = r.json().get("error")
        if isinstance(error, dict):
            return f"{error.get('message')} (code {error.get('code')})"
    except ValueError:
        pass
    return r.text[:500]
