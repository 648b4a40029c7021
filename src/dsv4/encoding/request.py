"""From an OpenAI chat-completions request body to `encode_messages` arguments."""

from .errors import EncodingError
from .render import encode_messages


def messages_of(request: dict) -> list[dict]:
    """The request's messages with its `tools` and `response_format` carried on the first system message,
    where DeepSeek's encoders read them (a system message is added at the front only when there is none
    there: putting one before an existing system prompt is the known tools-before-system bug)."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise EncodingError("request.messages must be a list")
    extra = {k: request[k] for k in ("tools", "response_format") if request.get(k)}
    if not extra:
        return messages
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        return [{**messages[0], **extra}, *messages[1:]]
    return [{"role": "system", "content": "", **extra}, *messages]


def thinking_mode_of(request: dict) -> str:
    """`thinking: {"type": "disabled"}`, `reasoning_effort: "none"` or `chat_template_kwargs: {"thinking": false}`
    turn reasoning off (the prompt then ends in `</think>`, so the completion has no reasoning to parse)."""
    if request.get("reasoning_effort") == "none":
        return "chat"
    thinking = request.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "disabled":
        return "chat"
    kwargs = request.get("chat_template_kwargs") or {}
    flag = kwargs.get("thinking", kwargs.get("enable_thinking"))
    return "chat" if flag is False else "thinking"


def encode_request(request: dict, *, dialect: str = "ga") -> str:
    """The prompt for an OpenAI chat-completions request body."""
    if not isinstance(request, dict):
        raise EncodingError(f"a request must be a JSON object, got {type(request).__name__}")
    return encode_messages(messages_of(request), thinking_mode=thinking_mode_of(request),
                           reasoning_effort=request.get("reasoning_effort"), dialect=dialect,
                           tool_choice=request.get("tool_choice"))
