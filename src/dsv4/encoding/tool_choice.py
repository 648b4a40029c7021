"""`tool_choice`: which tools the prompt offers, and whether the reply is forced to open with a tool call."""

from dataclasses import replace

from .conversation import Msg
from .errors import EncodingError
from .tokens import TOOL_CALLS_LEAD

# What a forced tool choice appends after the generation header; the completion continues inside the block,
# so a parser reading it must be fed this text first.
FORCED_TOOL_CALLS = TOOL_CALLS_LEAD + "\n"


def forced_name(tool_choice) -> str | None:
    """The function a named tool_choice forces, None for "auto"/"none"/"required"; raises on anything else."""
    if tool_choice in (None, "auto", "none", "required"):
        return None
    is_function = isinstance(tool_choice, dict) and tool_choice.get("type") == "function"
    fn = tool_choice.get("function") if is_function else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise EncodingError(f"tool_choice {tool_choice!r} is not 'auto', 'none', 'required' or "
                            '{"type": "function", "function": {"name": ...}}')
    return fn["name"]


def apply_tool_choice(msgs: list[Msg], tool_choice, *, thinking: bool, dialect: str) -> tuple[list[Msg], str]:
    """(messages with the offered tools, text to append after the generation header)."""
    name = forced_name(tool_choice)
    if tool_choice == "none":
        return [replace(m, tools=None) if m.tools else m for m in msgs], ""
    if tool_choice in (None, "auto"):
        return msgs, ""
    if dialect != "ga":
        raise EncodingError("a forced tool_choice exists only in dialect='ga' (DeepSeek's preview encoder has none)")
    offered = [fn["name"] for m in msgs for fn in (m.tools or [])]
    if not offered:
        raise EncodingError(f"tool_choice {tool_choice!r} but no tools are defined")
    # Thinking mode reasons first: the prompt ends in `<think>` and the engine's grammar forces the call after
    # `</think>` (DeepSeek's recipe refuses this combination; `dsv4.encoding.grammar` makes it hold).
    forced = "" if thinking else FORCED_TOOL_CALLS
    if name is None:
        return msgs, forced
    if name not in offered:
        raise EncodingError(f"tool_choice names {name!r}, which is not among the tools {offered}")
    only = [replace(m, tools=[fn for fn in m.tools if fn["name"] == name]) if m.tools else m for m in msgs]
    return only, forced
