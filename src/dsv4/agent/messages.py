"""The conversation of a run, typed: what the agent sends to a V4 endpoint and what it gets back.

An assistant turn keeps its `reasoning_content`: V4 is trained to see its earlier reasoning across tool turns
(the encoder keeps it whenever tools are defined), and DeepSeek's API refuses a replayed tool-call turn without it.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def wire(self) -> dict:
        """The OpenAI chat-completions form."""
        return self.model_dump(exclude_none=True)
