"""Events of the streaming completion parser, and folding them back into an `AssistantMessage`."""

from dataclasses import dataclass

from dsv4.encoding.message import AssistantMessage, ToolCall


@dataclass(frozen=True)
class ReasoningDelta:
    """More reasoning text (thinking mode, before `</think>`)."""

    text: str


@dataclass(frozen=True)
class ContentDelta:
    """More answer text."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A tool call began; `index` counts calls from 0 in the order they appear."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    """A fragment of a call's JSON arguments; a call's fragments concatenate to its final `arguments`."""

    index: int
    text: str


@dataclass(frozen=True)
class ToolCallEnd:
    """The call's arguments are complete."""

    index: int


@dataclass(frozen=True)
class ParseWarning:
    """The tolerant parser recovered from malformed output; `message` says how."""

    message: str


Event = ReasoningDelta | ContentDelta | ToolCallStart | ArgumentsDelta | ToolCallEnd | ParseWarning


def fold_events(events, *, thinking_mode: str = "thinking") -> AssistantMessage:
    """Accumulate parser events into the message they describe."""
    reasoning: list[str] = []
    content: list[str] = []
    calls: dict[int, tuple[str, str, list[str]]] = {}
    warnings: list[str] = []
    for ev in events:
        if isinstance(ev, ReasoningDelta):
            reasoning.append(ev.text)
        elif isinstance(ev, ContentDelta):
            content.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            calls[ev.index] = (ev.id, ev.name, [])
        elif isinstance(ev, ArgumentsDelta):
            calls[ev.index][2].append(ev.text)
        elif isinstance(ev, ParseWarning):
            warnings.append(ev.message)
    tool_calls = [ToolCall(id=i, name=n, arguments="".join(a)) for i, n, a in (calls[k] for k in sorted(calls))]
    return AssistantMessage(
        content="".join(content),
        reasoning_content="".join(reasoning) if thinking_mode == "thinking" else None,
        tool_calls=tool_calls,
        warnings=warnings,
    )
