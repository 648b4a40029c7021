"""OpenAI's Responses API (`POST /v1/responses`), the form Codex CLI, the OpenAI Agents SDK's default model and
`litellm.responses` speak: a request is translated to the chat-completions form and rendered by the same encoder
(as `anthropic.py` does for Messages), so tool_choice, response formats and thinking modes behave as on
`/v1/chat/completions`.

Input: a string, or items: messages (`input_text` / `output_text` parts; `developer` read as `system`), and the
items of an assistant turn (`reasoning`, assistant `message`, `function_call`) folded into one assistant message
with its reasoning and tool calls, then `function_call_output` items as tool messages paired by `call_id`.
`instructions` become the system message; function tools come in the Responses flat shape;
`reasoning.effort` is V4's effort (`none` turns thinking off); `text.format` is the response format.
`previous_response_id` continues a stored conversation (`response_store.py`; `store: false` keeps none);
instructions and tools are not inherited, as OpenAI's are not. Errors name the field in the request's own terms
(`input[3].call_id`).
"""

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from .backend import Backend
from .chat import ChatJob, prepare
from .error_paths import Origin, origins_location
from .errors import RequestError
from .protocol import ChatCompletionRequest
from .response_store import ResponseStore
from .surrogates import ApiRequest

UNSUPPORTED = ("background", "conversation", "prompt")  # features of OpenAI's platform this server has not


class ResponsesRequest(ApiRequest):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self):
        for name in UNSUPPORTED:
            if (self.model_extra or {}).get(name):
                raise ValueError(f"{name} is not supported by this server")
        return self

    @property
    def summary_requested(self) -> bool:
        """`reasoning.summary` asked for: V4 writes no separate summary, so its reasoning stands in."""
        return bool((self.reasoning or {}).get("summary") or (self.reasoning or {}).get("generate_summary"))


@dataclass
class ResponseJob:
    chat: ChatJob
    request: ResponsesRequest
    history: list[dict]  # the conversation so far in the chat form, without the instructions
    store: ResponseStore
    response_id: str
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def prompt_ids(self) -> list[int]:
        return self.chat.prompt_ids


def response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def prepare_response(request: ResponsesRequest, backend: Backend, store: ResponseStore, *, dialect: str,
                     default_max_tokens: int, **job) -> ResponseJob:
    """The job of a Responses request (`job`: `prepare`'s salvage and reasoning_store)."""
    history, origins = [], []
    if request.previous_response_id is not None:
        previous = store.get(request.previous_response_id)
        if previous is None:
            raise RequestError(f"previous_response_id: no stored response {request.previous_response_id!r} (it "
                               "was made with store=false, or has left this server's bounded store)", status=404,
                               code="previous_response_not_found", param="previous_response_id")
        history += previous
        origins += [Origin("previous_response_id")] * len(previous)
    for message, origin in input_messages(request.input):
        history.append(message)
        origins.append(origin)
    system = [({"role": "system", "content": request.instructions}, Origin("instructions"))] \
        if request.instructions else []
    body = chat_fields(request) | {"messages": [m for m, _ in system] + history}
    try:
        chat = ChatCompletionRequest.model_validate(body)
    except ValueError as e:
        raise RequestError(str(e)) from e
    try:
        chat_job = prepare(chat, backend, dialect=dialect, default_max_tokens=default_max_tokens,
                           locate=origins_location([o for _, o in system] + origins), **job)
    except RequestError as e:
        if e.param != "messages":
            raise
        raise RequestError(str(e).replace("the messages take", "the input takes"), status=e.status, code=e.code,
                           param="input") from e
    return ResponseJob(chat_job, request, history, store, response_id())


def chat_fields(request: ResponsesRequest) -> dict:
    """Everything but the messages, in the chat-completions form."""
    body: dict = {k: v for k, v in (("max_completion_tokens", request.max_output_tokens),
                                    ("temperature", request.temperature), ("top_p", request.top_p)) if v is not None}
    if request.tools:
        body["tools"] = [_tool(t, f"tools[{k}]") for k, t in enumerate(request.tools)]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    effort = (request.reasoning or {}).get("effort")
    if effort is not None:
        body["reasoning_effort"] = effort
    fmt = (request.text or {}).get("format")
    if fmt is not None:
        body["response_format"] = _response_format(fmt)
    return body


def _tool(tool: dict, where: str) -> dict:
    if tool.get("type") != "function":
        raise RequestError(f"{where}.type: only function tools are supported, got {tool.get('type')!r}",
                           param=f"{where}.type")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict) -> str | dict:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise RequestError(f"tool_choice: only 'auto', 'none', 'required' or a function, got {choice!r}",
                       param="tool_choice")


def _response_format(fmt: dict) -> dict:
    if fmt.get("type") == "json_schema":  # flat in the Responses API, nested in chat completions
        return {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
    return fmt


def input_messages(items: str | list[dict]) -> list[tuple[dict, Origin]]:
    """Input items -> chat messages, each with where it came from."""
    if isinstance(items, str):
        return [({"role": "user", "content": items}, Origin("input"))]
    out: list[tuple[dict, Origin]] = []
    turn: AssistantTurn | None = None
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise RequestError(f"{where}: must be an object, got {type(item).__name__}", param=where)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind in ("reasoning", "function_call") or (kind == "message" and item.get("role") == "assistant"):
            turn = turn or AssistantTurn(where)
            turn.add(kind, item, where)
            continue
        if turn is not None:
            out.append(turn.message())
            turn = None
        if kind == "message":
            out.append(_message(item, where))
        elif kind == "function_call_output":
            out.append(({"role": "tool", "tool_call_id": item.get("call_id"), "content": _output(item, where)},
                        Origin(where, {"tool_call_id": f"{where}.call_id", "content": f"{where}.output"})))
        else:
            raise RequestError(f"{where}.type: {kind!r} items are not supported (message, reasoning, function_call "
                               "and function_call_output are)", param=f"{where}.type")
    if turn is not None:
        out.append(turn.message())
    return out


def _message(item: dict, where: str) -> tuple[dict, Origin]:
    role = item.get("role")
    if role not in ("user", "system", "developer"):
        raise RequestError(f"{where}.role: must be 'user', 'assistant', 'system' or 'developer', got {role!r}",
                           param=f"{where}.role")
    return {"role": "system" if role == "developer" else role, "content": _parts(item.get("content"), where)}, \
        Origin(where)


def _parts(content, where: str, name: str = "content") -> str | list[dict]:
    """Message content: a string, or text parts (as chat `text` parts, so their indices stay the same)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise RequestError(f"{where}.{name}: must be a string or a list of parts", param=f"{where}.{name}")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        else:
            raise RequestError(f"{where}.{name}[{j}].type: {kind!r} parts are not supported (V4 reads text only)",
                               param=f"{where}.{name}[{j}].type")
    return parts


def _output(item: dict, where: str) -> str:
    parts = _parts(item.get("output", ""), where, "output")
    return parts if isinstance(parts, str) else "\n\n".join(p["text"] for p in parts)


class AssistantTurn:
    """The items of one assistant turn (reasoning, message, function calls), as one chat message."""

    def __init__(self, where: str):
        self.origin = Origin(where)
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.calls: list[dict] = []

    def add(self, kind: str, item: dict, where: str) -> None:
        if kind == "reasoning":
            self.origin.fields.setdefault("reasoning_content", where)
            parts = item.get("content") or item.get("summary") or []
            self.reasoning += [p.get("text", "") for p in parts if isinstance(p, dict)]
        elif kind == "message":
            self.origin.fields.setdefault("content", f"{where}.content")
            parts = _parts(item.get("content"), where)
            self.text.append(parts if isinstance(parts, str) else "".join(p["text"] for p in parts))
        else:
            call = f"tool_calls[{len(self.calls)}]"
            self.origin.fields.update({call: where, f"{call}.id": f"{where}.call_id",
                                       f"{call}.function.arguments": f"{where}.arguments",
                                       f"{call}.function.name": f"{where}.name"})
            arguments = item.get("arguments", "{}")
            self.calls.append({"id": item.get("call_id"), "type": "function", "function": {
                "name": item.get("name"),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}})

    def message(self) -> tuple[dict, Origin]:
        message: dict = {"role": "assistant", "content": "".join(self.text)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = self.calls
        return message, self.origin
