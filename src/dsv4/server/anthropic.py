"""Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`), as DeepSeek's own API offers
it, so Anthropic clients and agent tools that speak it run on V4.

A request is translated to the chat-completions form and rendered by the same encoder: system blocks become the
system message, `tool_result` blocks become tool messages (in their order, before the user's text), `thinking`
blocks become the assistant's `reasoning_content` (kept across tool turns, as V4 expects), `tool_use` blocks its
tool calls, `tool_choice` any/tool/none as required/named/none. The reply comes back as content blocks in the order
the model wrote them: `thinking`, `text`, `tool_use` (input parsed from the DSML call); streamed as Anthropic's
events (content_block_start / delta / stop, message_delta with the stop reason and usage).
"""

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from dsv4.encoding import (
    ArgumentsDelta,
    ContentDelta,
    EncodingError,
    Event,
    ReasoningDelta,
    ToolCallEnd,
    ToolCallStart,
    encode_request,
)

from .backend import Backend
from .chat import ChatJob, ChatRun, prepare
from .control_tokens import neutralised
from .error_paths import Origin, located_error, origins_location
from .errors import RequestError
from .prompt_bound import check_prompt_size
from .protocol import ChatCompletionRequest, thinking_type
from .surrogates import ApiRequest, without_lone_surrogates


class CountTokensRequest(ApiRequest):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None

    @field_validator("thinking")
    @classmethod
    def _thinking(cls, v):
        return thinking_type(v, ("enabled", "disabled", "adaptive"))


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False


def _text(content, where: str) -> str:
    """A string, or the text of a list of text blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where}: must be a string or a list of content blocks", param=where)
    parts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise RequestError(f"{where}[{i}]: {kind!r} blocks are not supported here (text only)",
                               param=f"{where}[{i}]")
        parts.append(block.get("text", ""))
    return "".join(parts)


def _user_messages(content, where: str) -> list[tuple[dict, Origin]]:
    """A user turn -> tool messages for its tool_result blocks, then a user message for its text."""
    if isinstance(content, str):
        return [({"role": "user", "content": content}, Origin(where))]
    out, text = [], []
    for i, block in enumerate(content if isinstance(content, list) else []):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            result = _text(block.get("content", ""), f"{where}.content[{i}].content")
            if block.get("is_error"):
                result = f"error: {result}"
            block_at = f"{where}.content[{i}]"
            out.append(({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": result},
                        Origin(block_at, {"tool_call_id": f"{block_at}.tool_use_id"})))
        elif kind == "text":
            text.append(block.get("text", ""))
        else:
            raise RequestError(f"{where}.content[{i}]: {kind!r} blocks are not supported in a user turn",
                               param=f"{where}.content[{i}]")
    if text or not out:
        out.append(({"role": "user", "content": "".join(text)}, Origin(where)))
    return out


def _assistant_message(content, where: str) -> tuple[dict, Origin]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}, Origin(where)
    reasoning, text, calls, origin = [], [], [], Origin(where)
    for i, block in enumerate(content if isinstance(content, list) else []):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "redacted_thinking":
            continue
        elif kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            block_at, call = f"{where}.content[{i}]", f"tool_calls[{len(calls)}]"
            origin.fields.update({call: block_at, f"{call}.function.arguments": f"{block_at}.input",
                                  f"{call}.function.name": f"{block_at}.name"})
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
        else:
            raise RequestError(f"{where}.content[{i}]: {kind!r} blocks are not supported in an assistant turn",
                               param=f"{where}.content[{i}]")
    message: dict = {"role": "assistant", "content": "".join(text)}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return message, origin


def chat_body(request: MessagesRequest | CountTokensRequest, origins: list[Origin] | None = None) -> dict:
    """The request in the chat-completions form; `origins` gets where each chat message came from."""
    translated: list[tuple[dict, Origin]] = []
    if request.system:
        translated.append(({"role": "system", "content": _text(request.system, "system")}, Origin("system")))
    for i, m in enumerate(request.messages):
        role, where = m.get("role"), f"messages[{i}]"
        if role == "user":
            translated += _user_messages(m.get("content", ""), where)
        elif role == "assistant":
            translated.append(_assistant_message(m.get("content", ""), where))
        else:
            raise RequestError(f"{where}.role: must be 'user' or 'assistant', got {role!r}", param=f"{where}.role")
    if origins is not None:
        origins += [origin for _, origin in translated]
    body: dict = {"messages": [message for message, _ in translated]}
    if request.tools:
        body["tools"] = [{"type": "function",
                          "function": {"name": t.get("name"), "description": t.get("description", ""),
                                       "parameters": t.get("input_schema") or {"type": "object"}}}
                         for t in request.tools]
    choice = request.tool_choice or {}
    kind = choice.get("type")
    if kind in ("any", "tool", "none"):
        body["tool_choice"] = {"any": "required", "none": "none"}.get(kind) or \
            {"type": "function", "function": {"name": choice.get("name")}}
    if request.thinking and request.thinking.get("type") == "disabled":
        body["thinking"] = {"type": "disabled"}
    if isinstance(request, MessagesRequest):
        body.update({k: v for k, v in (("max_tokens", request.max_tokens), ("temperature", request.temperature),
                                       ("top_p", request.top_p), ("top_k", request.top_k),
                                       ("stop", request.stop_sequences)) if v is not None})
    return body


def prepare_messages(request: MessagesRequest, backend: Backend, *, dialect: str, **job) -> ChatJob:
    """The job of a Messages request (`job`: `prepare`'s salvage and reasoning_store)."""
    origins: list[Origin] = []
    try:
        body = chat_body(request, origins)
        if "x_dsv4_salvage" in (request.model_extra or {}):  # dsv4's own switch (`chat.salvage_requested`)
            body["x_dsv4_salvage"] = request.model_extra["x_dsv4_salvage"]
        chat = ChatCompletionRequest.model_validate(body)
    except ValueError as e:
        raise RequestError(str(e)) from e
    return prepare(chat, backend, dialect=dialect, locate=origins_location(origins), **job)


def count_tokens(request: CountTokensRequest, backend: Backend, *, dialect: str) -> dict:
    origins: list[Origin] = []
    body = neutralised(chat_body(request, origins), backend)
    try:  # rendered as `prepare` does, without the limits: a prompt over the context still gets counted
        prompt = without_lone_surrogates(encode_request(body, dialect=dialect))
    except EncodingError as e:
        raise located_error(e, body, origins_location(origins)) from e
    # past the bound the prompt is over the context whatever its count, and tokenizing it is what costs
    check_prompt_size(prompt, backend, "messages")
    return {"input_tokens": len(backend.encode(prompt))}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _stop_reason(run: ChatRun) -> tuple[str, str | None]:
    out = run.output
    if out.finish_reason == "length":
        return "max_tokens", None
    if run.finish_reason() == "tool_calls":  # the model's calls, or calls it wrote as text (salvaged)
        return "tool_use", None
    if isinstance(out.stop_reason, str):
        return "stop_sequence", out.stop_reason
    return "end_turn", None


def _input(arguments: str) -> dict:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def complete_messages(job: ChatJob, backend: Backend) -> dict:
    run = ChatRun(job, backend)
    async for _ in run.steps():
        pass
    message = run.message()
    content: list[dict] = []
    if message.reasoning_content:
        content.append({"type": "thinking", "thinking": message.reasoning_content, "signature": ""})
    if message.content:
        content.append({"type": "text", "text": message.content})
    content += [{"type": "tool_use", "id": tc.id, "name": tc.name, "input": _input(tc.arguments)}
                for tc in message.tool_calls]
    reason, sequence = _stop_reason(run)
    return {"id": message_id(), "type": "message", "role": "assistant", "model": backend.model_name,
            "content": content, "stop_reason": reason, "stop_sequence": sequence,
            "usage": {"input_tokens": len(job.prompt_ids), "output_tokens": len(run.output.token_ids)},
            **({"x_dsv4_warnings": run.warnings()} if run.warnings() else {})}


class _Blocks:
    """Parser events -> Anthropic content-block events: a block opens when its kind starts and closes when another
    kind starts (or the message ends)."""

    def __init__(self):
        self.index, self.open, self.tool = -1, None, None

    def events(self, ev: Event) -> list[tuple[str, dict]]:
        out = []
        if isinstance(ev, ReasoningDelta | ContentDelta):
            kind = "thinking" if isinstance(ev, ReasoningDelta) else "text"
            if self.open != kind:
                out += self.close()
                out += self._start({"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking"
                                   else {"type": "text", "text": ""}, kind)
            delta = {"type": "thinking_delta", "thinking": ev.text} if kind == "thinking" else \
                {"type": "text_delta", "text": ev.text}
            out.append(("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}))
        elif isinstance(ev, ToolCallStart):
            out += self.close()
            out += self._start({"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}}, "tool_use")
        elif isinstance(ev, ArgumentsDelta) and self.open == "tool_use":
            out.append(("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                "delta": {"type": "input_json_delta", "partial_json": ev.text}}))
        elif isinstance(ev, ToolCallEnd):
            out += self.close()
        return out

    def _start(self, block: dict, kind: str) -> list[tuple[str, dict]]:
        self.index += 1
        self.open = kind
        return [("content_block_start", {"type": "content_block_start", "index": self.index,
                                         "content_block": block})]

    def close(self) -> list[tuple[str, dict]]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]


async def stream_messages(job: ChatJob, backend: Backend) -> AsyncIterator[str]:
    def sse(event: str, data: dict) -> str:
        return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    mid = message_id()
    yield sse("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": backend.model_name, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": len(job.prompt_ids), "output_tokens": 0}}})
    run, blocks, last_ping = ChatRun(job, backend), _Blocks(), time.monotonic()
    try:
        async for step in run.steps():
            for ev in step.events:
                for name, data in blocks.events(ev):
                    yield sse(name, data)
            if time.monotonic() - last_ping > 10:  # keeps proxies from closing a long silent turn
                last_ping = time.monotonic()
                yield sse("ping", {"type": "ping"})
    except Exception as e:
        yield sse("error", {"type": "error", "error": {"type": "api_error", "message": f"generation failed: {e}"}})
        return
    for i, call in enumerate(run.salvaged_calls()):  # calls written as text: tool_use blocks after that text
        for ev in (ToolCallStart(i, call.id, call.name), ArgumentsDelta(i, call.arguments), ToolCallEnd(i)):
            for name, data in blocks.events(ev):
                yield sse(name, data)
    for name, data in blocks.close():
        yield sse(name, data)
    reason, sequence = _stop_reason(run)
    yield sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                "usage": {"output_tokens": len(run.output.token_ids)}})
    yield sse("message_stop", {"type": "message_stop"})


ErrorKind = Literal["invalid_request_error", "authentication_error", "not_found_error", "request_too_large",
                    "overloaded_error", "api_error"]


def anthropic_error(message: str, kind: ErrorKind = "invalid_request_error") -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}
