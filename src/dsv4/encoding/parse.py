"""Parsing a V4 completion (the text after the generation header) into an `AssistantMessage`."""

from dsv4.encoding.events import fold_events
from dsv4.encoding.machine import CompletionMachine
from dsv4.encoding.message import AssistantMessage
from dsv4.encoding.strict_parse import parse_strict


def parse_completion(
    text: str, *, thinking_mode: str = "thinking", strict: bool = True, tools=None
) -> AssistantMessage:
    """Parse completion `text` (in thinking mode: what follows `<think>`; may end with EOS).

    `strict=True` accepts exactly what DeepSeek's reference parser accepts and raises `DSMLError` (with the
    character offset) where it raises; `tools` is then unused. `strict=False` never raises on any text: it
    recovers from malformed output the way the best streaming parsers do, keeps every character that is
    not markup, coerces `string="false"` values with the schemas of `tools` (OpenAI tools or function
    objects), and lists each recovery in `warnings`. Tool-call ids are fresh `call_<24 hex>`.
    """
    if strict:
        return parse_strict(text, thinking_mode)
    machine = CompletionMachine(thinking_mode, tools)
    return fold_events(machine.feed(text) + machine.finish(), thinking_mode=thinking_mode)
