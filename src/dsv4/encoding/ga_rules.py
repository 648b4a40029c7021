"""Request rules the `ga` dialect enforces, as deepseek-recipe's conversion does (same conditions, named)."""

from .conversation import Msg
from .errors import EncodingError


def check_ga(msgs: list[Msg]) -> None:
    if not msgs:
        raise EncodingError("messages is empty")
    for i, m in enumerate(msgs):
        check_message(i, m, msgs)
    check_json_object(msgs)
    check_strict_tools(msgs)


def check_message(i: int, m: Msg, msgs: list[Msg]) -> None:
    if m.role == "developer":
        raise EncodingError("the ga dialect has no developer role (deepseek-recipe rejects it);"
                            " use system, or dialect='preview'", index=i, field="role")
    if m.task is not None:
        raise EncodingError("quick-instruction tasks exist only in dialect='preview'", index=i, field="task")
    if m.role == "assistant":
        if not m.content_given and not m.calls:
            raise EncodingError("an assistant message needs content or tool_calls", index=i, field="content")
        if m.calls:
            check_answered(i, m, msgs)
    if m.prefix:
        if i != len(msgs) - 1:
            raise EncodingError("only the final message can be an unfinished assistant turn", index=i,
                                field="prefix")
        if any(x.tools or x.calls for x in msgs):
            raise EncodingError("an unfinished assistant turn cannot be used with tools", index=i, field="prefix")
        if any(x.response_format and x.response_format.get("type") == "json_object" for x in msgs):
            raise EncodingError("an unfinished assistant turn cannot be used with response_format json_object",
                                index=i, field="prefix")


def check_answered(i: int, m: Msg, msgs: list[Msg]) -> None:
    """Every call must be answered by the tool messages that directly follow it."""
    ids = [c.id for c in m.calls]
    for k, call_id in enumerate(ids):
        if not call_id:
            raise EncodingError("needs an id", index=i, field=f"tool_calls[{k}].id")
        if call_id in ids[:k]:
            raise EncodingError(f"duplicate id {call_id!r}", index=i, field=f"tool_calls[{k}].id")
    answered = set()
    for j in range(i + 1, len(msgs)):
        if msgs[j].role != "tool":
            break
        if not msgs[j].call_id:
            raise EncodingError("a tool message needs tool_call_id", index=j, field="tool_call_id")
        answered.add(msgs[j].call_id)
    missing = [c for c in ids if c not in answered]
    if missing:
        raise EncodingError(f"tool calls {missing} have no tool message answering them directly after",
                            index=i, field="tool_calls")


def check_json_object(msgs: list[Msg]) -> None:
    wants_json = any(m.response_format and m.response_format.get("type") == "json_object" for m in msgs)
    if wants_json and not any("json" in m.content.lower() for m in msgs):
        raise EncodingError("response_format json_object needs the word 'json' somewhere in the messages",
                            field="response_format")


def check_strict_tools(msgs: list[Msg]) -> None:
    """Strict tools are enforced by constrained decoding, which cannot also enforce a response format."""
    flags = {bool(fn.get("strict")) for m in msgs for fn in (m.tools or [])}
    if len(flags) > 1:
        raise EncodingError("strict and non-strict tools cannot be mixed in one request", field="tools")
    if True in flags and any(m.response_format for m in msgs):
        raise EncodingError("response_format cannot be combined with strict tools", field="response_format")
