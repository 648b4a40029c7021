"""The strict V4 completion grammar: exactly what DeepSeek's reference `parse_message_from_completion_text`
(`encoding/encoding_dsv4.py`) accepts, with a `DSMLError` at the offending character wherever it raises.

Written from the reference's observable behaviour, quirks included: the blank line before the block is
required; tags must be separated by exactly one newline; an invoke head may end in one extra newline;
a text that stops right after a `</｜DSML｜parameter>\\n` or an invoke head is a complete call; `string="false"`
values are pasted into the arguments unchecked; only content and reasoning are checked for special tokens.
"""

import json
import re

from dsv4.encoding.call_builder import new_call_id
from dsv4.encoding.errors import DSMLError
from dsv4.encoding.message import AssistantMessage, ToolCall
from dsv4.encoding.tokens import (
    BOS,
    DSML,
    EOS,
    INVOKE_OPEN,
    PARAM_OPEN,
    THINK_END,
    THINK_START,
    TOOL_CALLS_CLOSE,
    TOOL_CALLS_LEAD,
)

_BLOCK_LEAD = TOOL_CALLS_LEAD[:-1]  # the reference stops at "\n\n<｜DSML｜tool_calls", without the ">"
_INVOKE_END = f"</{DSML}invoke"  # likewise without ">"
_PARAM_END = f"/{DSML}parameter"  # the value runs to the "<" before this
_NAME = re.compile(r'\s*name="(.*?)">\n\n?', re.DOTALL)
_PARAM = re.compile(r' name="(.*?)" string="(true|false)">(.*?)<\n?', re.DOTALL)
_FORBIDDEN = (BOS, EOS, THINK_START, THINK_END, DSML)


def _find_first(text: str, pos: int, stops: tuple[str, ...]) -> tuple[int, str | None]:
    """(index, stop) of the earliest stop string at or after `pos`; (len(text), None) if none occurs."""
    best, found = len(text), None
    for s in stops:
        i = text.find(s, pos, best + len(s))
        if i != -1 and i < best:
            best, found = i, s
    return best, found


def _expect_newline(text: str, pos: int, end: int) -> None:
    if text[pos:end] != ">\n":
        raise DSMLError(f"expected '>\\n' before the next DSML tag, got {text[pos:end][:40]!r}", offset=pos)


def reference_arguments(params: dict[str, tuple[str, str]]) -> str:
    """The reference's hand-built arguments JSON: string values dumped, `string="false"` values verbatim."""

    def item(key: str, value: str, flag: str) -> str:
        v = json.dumps(value, ensure_ascii=False) if flag == "true" else value
        return f"{json.dumps(key, ensure_ascii=False)}: {v}"

    return "{" + ", ".join(item(k, v, f) for k, (v, f) in params.items()) + "}"


def _parse_params(text: str, pos: int, stop: str | None) -> tuple[int, str | None, dict]:
    params: dict[str, tuple[str, str]] = {}
    while stop == PARAM_OPEN:
        end, stop = _find_first(text, pos, (_PARAM_END,))
        m = _PARAM.fullmatch(text, pos, end)
        if m is None:
            raise DSMLError(f"malformed parameter {text[pos:end][:60]!r}", offset=pos)
        if m[1] in params:
            raise DSMLError(f"duplicate parameter name {m[1]!r}", offset=pos)
        params[m[1]] = (m[3], m[2])
        pos = end + len(stop) if stop else end
        end, stop = _find_first(text, pos, (PARAM_OPEN, _INVOKE_END))
        _expect_newline(text, pos, end)
        pos = end + len(stop) if stop else end
    return pos, stop, params


def _parse_block(text: str, pos: int) -> tuple[int, list[ToolCall]]:
    """Read invokes after `\\n\\n<｜DSML｜tool_calls`; return where the block ends and its calls."""
    calls = []
    while pos < len(text):
        end, stop = _find_first(text, pos, (INVOKE_OPEN, TOOL_CALLS_CLOSE))
        _expect_newline(text, pos, end)
        if stop is None:
            raise DSMLError("tool-call block ends without a DSML tag", offset=end)
        pos = end + len(stop)
        if stop == TOOL_CALLS_CLOSE:
            break
        end, stop = _find_first(text, pos, (PARAM_OPEN, _INVOKE_END))
        name = _NAME.fullmatch(text, pos, end)
        if name is None:
            raise DSMLError(f"malformed invoke tag {text[pos:end][:60]!r}", offset=pos)
        pos, stop, params = _parse_params(text, end + len(stop) if stop else end, stop)
        calls.append(ToolCall(id=new_call_id(), name=name[1], arguments=reference_arguments(params)))
    return pos, calls


def _check_tokens(text: str, start: int, end: int, field: str) -> None:
    for tok in _FORBIDDEN:
        i = text.find(tok, start, end)
        if i != -1:
            raise DSMLError(f"special token {tok!r} in {field}", offset=i)


def parse_strict(text: str, thinking_mode: str = "thinking") -> AssistantMessage:
    """Parse a completion exactly as the reference does; raise `DSMLError` where it raises."""
    pos, reasoning = 0, None
    if thinking_mode == "thinking":
        end, stop = _find_first(text, 0, (THINK_END, _BLOCK_LEAD))
        if stop != THINK_END:
            raise DSMLError("reasoning not closed by </think>", offset=end)
        reasoning, r_end, pos = text[:end], end, end + len(THINK_END)
    elif thinking_mode != "chat":
        raise ValueError(f"thinking_mode must be 'thinking' or 'chat', got {thinking_mode!r}")
    c_start = pos
    c_end, stop = _find_first(text, pos, (EOS, _BLOCK_LEAD))
    if stop is None:
        raise DSMLError("missing end-of-sentence token", offset=c_end)
    calls = []
    pos = c_end + len(stop)
    if stop == _BLOCK_LEAD:
        pos, calls = _parse_block(text, pos)
        if pos < len(text):
            if not text.startswith(EOS, pos):
                raise DSMLError("unexpected text after the tool calls", offset=pos)
            pos += len(EOS)
    if pos != len(text):
        raise DSMLError("unexpected text after the end-of-sentence token", offset=pos)
    if reasoning is not None:
        _check_tokens(text, 0, r_end, "reasoning")
    _check_tokens(text, c_start, c_end, "content")
    return AssistantMessage(content=text[c_start:c_end], reasoning_content=reasoning, tool_calls=calls)
