"""The `preview` dialect: DeepSeek's April 2026 `encoding/encoding_dsv4.py` (HF DeepSeek-V4-Pro/-Flash).

Byte-identical to that file, with one deliberate fix: dict `arguments` render as their own parameters.
"""

from dataclasses import replace

from .conversation import Msg
from .dsml import render_tool_calls
from .errors import EncodingError
from .templates import EFFORT_ABSOLUTE_MAXIMUM, RESPONSE_SCHEMA_TEMPLATE, render_tools, to_json
from .tokens import (
    ASSISTANT,
    BOS,
    EOS,
    LATEST_REMINDER,
    TASK_TOKENS,
    THINK_END,
    THINK_START,
    TOOL_RESULT_CLOSE,
    TOOL_RESULT_OPEN,
    USER,
)

EFFORTS = (None, "high", "max")  # "high" renders nothing here: only "max" has a prefix in this generation


def merge_tool_results(msgs: list[Msg]) -> list[Msg]:
    """Tool results become blocks of a user turn; consecutive users (and a user after results) merge."""
    merged: list[Msg] = []
    for m in msgs:
        last = merged[-1] if merged else None
        if m.role == "tool":
            block = ("tool_result", m.content, m.call_id or "")
            if last is not None and last.blocks is not None:
                last.blocks.append(block)
            else:
                merged.append(Msg("user", blocks=[block]))
        elif m.role == "user":
            block = ("text", m.content, "")
            if last is not None and last.blocks is not None and last.task is None:
                last.blocks.append(block)
            else:
                merged.append(replace(m, blocks=[block]))
        else:
            merged.append(m)
    return merged


def sort_tool_results(msgs: list[Msg]) -> None:
    """Reorder result blocks in place to follow the call order of the latest assistant tool calls."""
    order: dict[str, int] = {}
    for m in msgs:
        if m.role == "assistant" and m.calls:
            order = {c.id: i for i, c in enumerate(m.calls) if c.id}
        elif m.blocks and order:
            results = [b for b in m.blocks if b[0] == "tool_result"]
            if len(results) > 1:
                ranked = iter(sorted(results, key=lambda b: order.get(b[2], 0)))
                m.blocks = [next(ranked) if b[0] == "tool_result" else b for b in m.blocks]


def last_user_index(msgs: list[Msg]) -> int:
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].role in ("user", "developer"):
            return i
    return -1


def drop_thinking(msgs: list[Msg]) -> list[Msg]:
    """Before the last user turn: assistants lose their reasoning, developer messages go away."""
    last = last_user_index(msgs)
    kept = []
    for i, m in enumerate(msgs):
        if m.role != "developer" or i >= last:
            kept.append(m if m.role != "assistant" or i >= last else replace(m, reasoning=None))
    return kept


def render_system_like(m: Msg) -> str:
    text = m.content
    if m.tools:
        text += "\n\n" + render_tools(m.tools)
    if m.response_format:
        text += "\n\n" + RESPONSE_SCHEMA_TEMPLATE.format(schema=to_json(m.response_format))
    return text


def render_user_blocks(blocks: list[tuple[str, str, str]]) -> str:
    """A user turn: text and `<tool_result>` blocks separated by a blank line (both dialects)."""
    parts = [text if kind == "text" else f"{TOOL_RESULT_OPEN}{text}{TOOL_RESULT_CLOSE}" for kind, text, _ in blocks]
    return USER + "\n\n".join(parts)


def render_assistant(i: int, msgs: list[Msg], thinking: bool, drop: bool, last_user: int) -> str:
    m = msgs[i]
    after_task = i > 0 and msgs[i - 1].task is not None
    text = ""
    if thinking and not after_task and (not drop or i > last_user):
        text = (m.reasoning or "") + THINK_END
    text += m.content
    if m.calls:
        text += render_tool_calls([(c.name, c.arguments) for c in m.calls], empty_line=True)
    return text if m.prefix else text + EOS


def render_transition(i: int, msgs: list[Msg], thinking: bool, drop: bool, last_user: int) -> str:
    """What follows message i: a task token or the generation header, when an assistant turn comes next."""
    m = msgs[i]
    if i + 1 < len(msgs) and msgs[i + 1].role not in ("assistant", "latest_reminder"):
        return ""
    think = THINK_START if thinking and (not drop or i >= last_user) else THINK_END
    if m.task == "action":  # the action header ignores retention: it opens reasoning whenever thinking is on
        return ASSISTANT + (THINK_START if thinking else THINK_END) + TASK_TOKENS["action"]
    if m.task is not None:
        return TASK_TOKENS[m.task]
    if m.role in ("user", "developer"):
        return ASSISTANT + think
    return ""


def render_message(i: int, msgs: list[Msg], thinking: bool, drop: bool, effort: str | None, last_user: int) -> str:
    m = msgs[i]
    text = EFFORT_ABSOLUTE_MAXIMUM if i == 0 and thinking and effort == "max" else ""
    if m.role == "system":
        text += render_system_like(m)
    elif m.role == "developer":
        if not m.content:
            raise EncodingError("a developer message needs content", index=i, field="content")
        text += USER + render_system_like(m)
    elif m.role == "user":
        text += render_user_blocks(m.blocks)
    elif m.role == "latest_reminder":
        text += LATEST_REMINDER + m.content
    else:
        text += render_assistant(i, msgs, thinking, drop, last_user)
    return text + render_transition(i, msgs, thinking, drop, last_user)


def encode_preview(context: list[Msg], msgs: list[Msg], *, thinking: bool, effort: str | None,
                   drop_thinking_: bool, add_bos: bool) -> str:
    if effort not in EFFORTS:
        raise EncodingError(f"reasoning_effort {effort!r} is not one of the preview dialect's None, 'high', 'max'")
    context, msgs = merge_tool_results(context), merge_tool_results(msgs)
    full = context + msgs
    sort_tool_results(full)
    drop = drop_thinking_ and not any(m.tools for m in full)
    start = len(context)
    if thinking and drop:
        full = drop_thinking(full)
        start = len(drop_thinking(context))
    prompt = BOS if add_bos and not context else ""
    last_user = last_user_index(full)  # once for the conversation, not once per message
    return prompt + "".join(render_message(i, full, thinking, drop, effort, last_user)
                            for i in range(start, len(full)))
