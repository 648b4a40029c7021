"""A run's record: the whole conversation, each step's completion, tool results, usage and timing, and how the run
ended. Saved (atomically: a crash never leaves half a file) once the model has answered and after each tool call,
so a run that dies is still read, and resumed from where it was (`dsv4.agent.run`)."""

import os
from pathlib import Path

from pydantic import BaseModel, Field

from .messages import Message


class ToolResult(BaseModel):
    call_id: str
    name: str
    ok: bool
    output: str
    duration_s: float


class Step(BaseModel):
    index: int
    finish_reason: str
    usage: dict[str, int] = Field(default_factory=dict)
    prompt_chars: int = 0
    """Characters of the conversation sent (with usage.prompt_tokens: the tokens per character)."""
    tool_results: list[ToolResult] = Field(default_factory=list)
    warnings: list[dict] = Field(default_factory=list)
    """What the endpoint (`x_dsv4_warnings`) or the agent recovered from: e.g. a tool call salvaged from text."""
    duration_s: float


class Elided(BaseModel):
    """A text replaced by a stub in `messages` to keep the run inside the context, kept here."""

    message: int
    field: str
    text: str


class Trajectory(BaseModel):
    task: str
    model: str
    tools: list[str]
    messages: list[Message]
    steps: list[Step] = Field(default_factory=list)
    elided: list[Elided] = Field(default_factory=list)
    partial: Step | None = None
    """The step in progress: its reply is in `messages` (the last assistant turn), `tool_results` holds the calls
    run so far; None between steps."""
    journal_seq: int | None = None
    """The sandbox journal's records the saved tool results account for (`Sandbox.journal_position`); None when
    the tools' sandbox keeps no journal."""
    elapsed_s: float = 0.0
    """Seconds the run has taken (across resumes; a fork carries its parent's)."""
    forked_at: int | None = None
    """For a fork: how many steps its parent had made when it was copied (the steps before are shared)."""
    status: str = "running"
    """running, finished (an answer without tool calls), length (the answer was cut at max_tokens),
    limits_exceeded, context_exhausted, error."""
    error: str | None = None

    @property
    def answer(self) -> str | None:
        """The final assistant content, when the run finished."""
        last = self.messages[-1]
        return last.content if self.status in ("finished", "length") and last.role == "assistant" else None

    def tokens(self) -> int:
        return sum(s.usage.get("prompt_tokens", 0) + s.usage.get("completion_tokens", 0) for s in self.steps)

    def save(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)  # `--trajectory runs/x.json` on a fresh checkout
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Trajectory":
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
