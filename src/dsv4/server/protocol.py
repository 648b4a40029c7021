"""The OpenAI chat-completions wire format: the request body dsv4 accepts and the objects it returns.

Messages, tools and tool_choice are checked by `dsv4.encoding` when the prompt is rendered (its errors name the
message and field), so they stay plain JSON here. Fields other servers accept and dsv4 has no use for
(`user`, `parallel_tool_calls`, `service_tier`, ...) are accepted and ignored, as vLLM does; sampling fields it
cannot honour (penalties, n > 1, logit_bias) are refused with a 400 that names them rather than ignored.
"""

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .surrogates import ApiRequest


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(ApiRequest):
    """What the chat and the text completions share: sampling, limits, stops."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # vLLM's extension; -1 or 0: all tokens
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension (benchmarks): generate max_tokens whatever the model says
    stop: str | list[str] | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else v
        if stops is not None and any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        if stops is not None and len(stops) > 16:
            raise ValueError(f"at most 16 stop strings; got {len(stops)}")
        return v

    @model_validator(mode="after")
    def _supported(self):
        if self.n != 1:
            raise ValueError(f"n={self.n}: only n=1 is supported (send the request n times)")
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty and frequency_penalty are not supported (send 0 or leave them out)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    # reasoning: DeepSeek's `thinking: {"type": "enabled" | "disabled"}`, `reasoning_effort`, or vLLM's
    # `chat_template_kwargs: {"thinking": bool}`
    thinking: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    @field_validator("thinking")
    @classmethod
    def _thinking(cls, v):
        return thinking_type(v, ("enabled", "disabled"))

    @property
    def token_limit(self) -> int | None:
        """max_completion_tokens (the current name) or max_tokens (the old one)."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def n_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def encoder_request(self) -> dict:
        """The body as `dsv4.encoding.encode_request` reads it."""
        return self.model_dump(exclude_none=True)


class CompletionRequest(SamplingFields):
    """The legacy text completion: a raw prompt (text, or token ids), no chat template."""

    prompt: str | list[int] = Field(min_length=1)
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for this endpoint
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _completion_supported(self):
        if self.suffix:
            raise ValueError("suffix (fill in the middle) is not supported")
        if self.best_of not in (None, 1):
            raise ValueError(f"best_of={self.best_of}: only 1 is supported")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo with logprobs would need the prompt's logprobs, which are not computed")
        return self

    @property
    def n_logprobs(self) -> int | None:
        return self.logprobs


def thinking_type(thinking: dict | None, known: tuple[str, ...]) -> dict | None:
    """`thinking` checked: a type the server acts on (one it does not know would be ignored silently)."""
    if thinking is not None and thinking.get("type") not in known:
        raise ValueError(f"thinking.type must be one of {', '.join(map(repr, known))}, got {thinking.get('type')!r}")
    return thinking


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "dsv4"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
