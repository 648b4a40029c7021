"""A scripted model (queued assistant turns, every request recorded) and sandboxes from the sandbox suite."""

import json

import pytest

from dsv4.agent import Completion, Message

from ..sandbox.conftest import make_sandbox  # noqa: F401  (skips only where bubblewrap cannot run)
from ..server.conftest import real_tokenizer  # noqa: F401


def call(call_id: str, name: str, **arguments) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


class ScriptedClient:
    """Answers each request with the next queued turn: (content, reasoning, tool calls[, finish_reason])."""

    model = "scripted"

    def __init__(self, turns: list[tuple]):
        self.turns = list(turns)
        self.requests: list[tuple[list[dict], list[dict]]] = []

    def complete(self, messages, tools):
        self.requests.append(([m.wire() for m in messages], tools))
        if not self.turns:
            raise AssertionError("the agent asked for more turns than were scripted")
        content, reasoning, calls, *finish = self.turns.pop(0)
        message = Message(role="assistant", content=content, reasoning_content=reasoning, tool_calls=calls or None)
        return Completion(message, finish[0] if finish else ("tool_calls" if calls else "stop"),
                          {"prompt_tokens": 100, "completion_tokens": 10})


@pytest.fixture
def scripted():
    return ScriptedClient
