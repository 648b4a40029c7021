"""The parsed form of an assistant completion."""

from dataclasses import dataclass, field


@dataclass
class ToolCall:
    """One tool call; `arguments` is a JSON object as text (the OpenAI wire form)."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class AssistantMessage:
    """An assistant turn recovered from completion text.

    `reasoning_content` is None in non-think mode. `warnings` lists every recovery the tolerant parser made.
    """

    content: str = ""
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_openai(self) -> dict:
        msg: dict = {"role": "assistant", "content": self.content}
        if self.reasoning_content is not None:
            msg["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            msg["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
        return msg
