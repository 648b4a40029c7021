"""Checking and normalizing OpenAI-format chat messages before either dialect renders them."""

import json
from dataclasses import dataclass, field

from .errors import EncodingError
from .tokens import TASK_TOKENS

ROLES = ("system", "developer", "user", "assistant", "tool", "latest_reminder")


@dataclass(slots=True)
class Call:
    """A tool call of an assistant turn; `arguments` decoded to a dict. `source` is the JSON text it came as
    (None for a dict): the ga dialect reads its numbers from the text as deepseek-recipe does (`-0` keeps
    its sign there, which Python's json drops)."""

    id: str
    name: str
    arguments: dict
    source: str | None = None


@dataclass(slots=True)
class Msg:
    """One checked message. `prefix` marks an unfinished assistant turn (`wo_eos` or `prefix`)."""

    role: str
    content: str = ""
    reasoning: str | None = None
    calls: list[Call] = field(default_factory=list)
    call_id: str | None = None
    tools: list[dict] | None = None
    response_format: dict | None = None
    task: str | None = None
    prefix: bool = False
    content_given: bool = True
    # A user turn after merging: (kind, text, tool_call_id) with kind "text" or "tool_result".
    blocks: list[tuple[str, str, str]] | None = None


def text_of(content, index: int, *, unsupported_as_text: bool = False) -> str:
    """Message content as text: a string, None, or a list of parts whose text parts join with a blank line."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise EncodingError(f"must be a string or a list of parts, got {type(content).__name__}",
                            index=index, field="content")
    parts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif unsupported_as_text and kind is not None:
            parts.append(f"[Unsupported {kind}]")
        else:
            raise EncodingError(f"unsupported content part {kind!r} (V4 renders text parts only)",
                                index=index, field=f"content[{i}]")
    return "\n\n".join(parts)


def decode_arguments(arguments, index: int, k: int) -> dict:
    """Tool-call arguments as a dict: a JSON-object string or a dict (rendered as its own parameters)."""
    where = f"tool_calls[{k}].function.arguments"
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise EncodingError(f"must be a JSON object string or a dict, got {type(arguments).__name__}",
                            index=index, field=where)
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as e:
        raise EncodingError(f"is not valid JSON ({e.msg} at {e.pos}): {arguments[:80]!r}",
                            index=index, field=where) from None
    if not isinstance(value, dict):
        raise EncodingError(f"must encode a JSON object, got {type(value).__name__}", index=index, field=where)
    return value


def check_calls(raw, index: int) -> list[Call]:
    if not isinstance(raw, list):
        raise EncodingError("must be a list", index=index, field="tool_calls")
    calls = []
    for k, tc in enumerate(raw):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise EncodingError("needs a `function` with a string `name`", index=index, field=f"tool_calls[{k}]")
        call_id = tc.get("id") or ""
        if not isinstance(call_id, str):
            raise EncodingError("must be a string", index=index, field=f"tool_calls[{k}].id")
        arguments = fn.get("arguments", "{}")
        source = arguments if isinstance(arguments, str) else None
        calls.append(Call(call_id, fn["name"], decode_arguments(arguments, index, k), source))
    return calls


def check_tools(raw, index: int) -> list[dict]:
    if not isinstance(raw, list):
        raise EncodingError("must be a list of tools", index=index, field="tools")
    functions = []
    for k, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise EncodingError('must be {"type": "function", "function": {"name": ...}}',
                                index=index, field=f"tools[{k}]")
        functions.append(fn)
    return functions


def check_message(raw, index: int) -> Msg:
    if not isinstance(raw, dict):
        raise EncodingError(f"must be an object, got {type(raw).__name__}", index=index)
    role = raw.get("role")
    if role not in ROLES:
        raise EncodingError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})", index=index,
                            field="role")
    msg = Msg(role, text_of(raw.get("content"), index, unsupported_as_text=role == "tool"),
              content_given=raw.get("content") is not None)
    reasoning = raw.get("reasoning_content")
    if reasoning is not None and not isinstance(reasoning, str):
        raise EncodingError("must be a string", index=index, field="reasoning_content")
    msg.reasoning = reasoning
    if raw.get("tool_calls"):
        if role != "assistant":
            raise EncodingError(f"only assistant messages carry tool calls, not {role!r}", index=index,
                                field="tool_calls")
        msg.calls = check_calls(raw["tool_calls"], index)
    if role == "tool":
        call_id = raw.get("tool_call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise EncodingError("must be a string", index=index, field="tool_call_id")
        msg.call_id = call_id
    if raw.get("tools"):
        if role not in ("system", "developer"):
            raise EncodingError(f"tools are carried on a system or developer message, not {role!r}",
                                index=index, field="tools")
        msg.tools = check_tools(raw["tools"], index)
    if raw.get("response_format") is not None:
        if role not in ("system", "developer"):
            raise EncodingError(f"response_format is carried on a system or developer message, not {role!r}",
                                index=index, field="response_format")
        if not isinstance(raw["response_format"], dict):
            raise EncodingError("must be an object", index=index, field="response_format")
        msg.response_format = raw["response_format"]
    task = raw.get("task")
    if task is not None and task not in TASK_TOKENS:
        raise EncodingError(f"unknown task {task!r} (expected one of {', '.join(TASK_TOKENS)})", index=index,
                            field="task")
    msg.task = task
    msg.prefix = bool(raw.get("wo_eos") or raw.get("prefix"))
    if msg.prefix and role != "assistant":
        raise EncodingError("only an assistant message can be unfinished (wo_eos/prefix)", index=index,
                            field="wo_eos" if raw.get("wo_eos") else "prefix")
    return msg


def check_tool_results(msgs: list[Msg], offset: int = 0) -> None:
    """Every tool result must answer a call of the assistant turn it follows."""
    open_ids: set[str] | None = None
    for i, m in enumerate(msgs):
        if m.role == "assistant":
            open_ids = {c.id for c in m.calls} if m.calls else None
        elif m.role == "tool":
            if open_ids is None:
                raise EncodingError("tool result does not follow an assistant message with tool_calls",
                                    index=i + offset, field="tool_call_id")
            if m.call_id and m.call_id not in open_ids:
                raise EncodingError(f"no tool call with id {m.call_id!r} in the preceding assistant message",
                                    index=i + offset, field="tool_call_id")
        elif m.role not in ("latest_reminder",):
            open_ids = None


def check_messages(messages, offset: int = 0) -> list[Msg]:
    if not isinstance(messages, list):
        raise EncodingError(f"messages must be a list, got {type(messages).__name__}")
    return [check_message(m, i + offset) for i, m in enumerate(messages)]
