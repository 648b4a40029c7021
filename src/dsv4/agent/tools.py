"""Tools the model may call: a name, a JSON schema for the arguments, and a function of the checked arguments.

`ToolRegistry.call` never raises: an unknown name, arguments that are not JSON or break the schema, and a tool
that fails all come back as the tool's output with `ok=False`, text that tells the model what went wrong (and, for
a failed tool, whatever it produced), so the loop goes on and the model can correct itself.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from dsv4.encoding import ArgumentsError, validate_arguments


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    fn: Callable[..., str]  # called with the checked arguments as keywords
    journaled: bool = False
    """Its effects are all operations of the run's sandbox, which a journal records: a call of it that a crash
    interrupted is made again on resume (see `dsv4.agent.run`); a call of any other tool is not."""

    def schema(self, strict: bool = False) -> dict:
        """The OpenAI tool object; `strict`: a function whose calls a server enforces to match its parameters, in
        OpenAI's strict form (`strict_parameters`)."""
        if not strict:
            return {"type": "function",
                    "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": strict_parameters(self.parameters), "strict": True}}


def strict_parameters(schema: dict) -> dict:
    """The arguments object in OpenAI's strict form, which deepseek-recipe also requires of a strict tool: every
    property required, the optional ones nullable (null stands for "not given": `ToolRegistry.call` drops it), no
    others."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    nullable = {k: v if k in required else {"anyOf": [v, {"type": "null"}]} for k, v in props.items()}
    return {**schema, "properties": nullable, "required": list(props), "additionalProperties": False}


def without_nulls(schema: dict, arguments: str | dict) -> str | dict:
    """The arguments less the optional ones given as null (a strict call's way to leave them out); anything that
    is not a JSON object as it came, for the check to name."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    if not isinstance(arguments, dict):
        return arguments
    required = set(schema.get("required") or ())
    return {k: v for k, v in arguments.items() if v is not None or k in required}


@dataclass(frozen=True)
class ToolOutput:
    text: str
    ok: bool
    duration_s: float = 0.0


class ToolFailed(Exception):
    """Raised by a tool whose work failed but produced output the model should see (kept in the message)."""


class ToolRegistry:
    def __init__(self, tools: list[Tool]):
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self.tools[tool.name] = tool

    def schemas(self, strict: bool = False) -> list[dict]:
        return [t.schema(strict) for t in self.tools.values()]

    def call(self, name: str, arguments: str) -> ToolOutput:
        start = time.monotonic()
        tool = self.tools.get(name)
        if tool is None:
            return ToolOutput(f"error: there is no tool {name!r}; the tools are {', '.join(self.tools)}", False)
        try:
            args = validate_arguments(tool.schema(), without_nulls(tool.parameters, arguments))
        except ArgumentsError as e:
            return ToolOutput(f"error: invalid arguments for {name}: {e}", False)
        try:
            return ToolOutput(tool.fn(**args), True, time.monotonic() - start)
        except ToolFailed as e:
            return ToolOutput(str(e), False, time.monotonic() - start)
        except Exception as e:  # the tool broke: the model sees why, the run goes on
            return ToolOutput(f"error: {name} failed: {type(e).__name__}: {e}", False, time.monotonic() - start)
