"""Where a rendering error lies in the body the client sent.

`dsv4.encoding` names a message by its index in the list it renders, which is not always the client's list:
`tools` and `response_format` are carried on the first system message (one is put in front when there is none),
and the Anthropic and Responses endpoints translate bodies of their own into chat messages. `located_error` maps
an `EncodingError` back to the client's path (`messages[1].content`, `tools[0]`, `input[3].call_id`, ...), and
says it in the message as well as in `param`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from dsv4.encoding import EncodingError

from .errors import RequestError

# (index of a chat message as the client's request has it, a chat field of it or None) -> the client's path
Locate = Callable[[int, str | None], str]

CARRIED = ("tools", "response_format")  # request fields the encoder reads from the first system message


def chat_location(index: int, chat_field: str | None) -> str:
    return f"messages[{index}]" + (f".{chat_field}" if chat_field else "")


@dataclass
class Origin:
    """Where one translated chat message came from: `path` in the client's body, and for chat fields that lie
    elsewhere (an assistant turn built from several items or blocks) their paths: the longest prefix wins, the
    rest of the field is kept (`tool_calls[0].function.arguments` -> `input[4].arguments`)."""

    path: str
    fields: dict[str, str] = field(default_factory=dict)

    def locate(self, chat_field: str | None) -> str:
        if chat_field is None:
            return self.path
        for prefix in sorted(self.fields, key=len, reverse=True):
            if chat_field == prefix or chat_field.startswith((prefix + ".", prefix + "[")):
                return self.fields[prefix] + chat_field[len(prefix):]
        return f"{self.path}.{chat_field}"


def origins_location(origins: list[Origin]) -> Locate:
    return lambda index, chat_field: origins[index].locate(chat_field) if index < len(origins) else \
        chat_location(index, chat_field)


def located_error(e: EncodingError, body: dict, locate: Locate = chat_location) -> RequestError:
    """`e` as a 400 naming the client's path (`body`: the chat-form request that was rendered)."""
    where = _where(e)
    message = str(e)[len(where) + 2:] if where and str(e).startswith(where + ": ") else str(e)
    param = _param(e, body, locate)
    return RequestError(f"{param}: {message}" if param else message, param=param)


def _where(e: EncodingError) -> str:
    """The prefix `EncodingError` put on its message."""
    return ".".join(([f"messages[{e.index}]"] if e.index is not None else []) +
                    ([e.field] if e.field is not None else []))


def _param(e: EncodingError, body: dict, locate: Locate) -> str | None:
    if e.index is None:
        return e.field
    index = e.index
    carried = [k for k in CARRIED if body.get(k)]
    if carried:
        head = (e.field or "").split(".")[0].split("[")[0]
        if index == 0 and head in carried:  # the request's own field, carried on the system message
            return e.field
        messages = body.get("messages") or []
        first_is_system = bool(messages) and isinstance(messages[0], dict) and messages[0].get("role") == "system"
        index -= 0 if first_is_system else 1  # a system message was put in front
    return locate(index, e.field)
