"""`Dsv4Agent`: dsv4's agent loop as a Harbor agent, its tools run through the Harbor environment's `exec`, so
Harbor evaluates it on any of its environments (Docker, Daytona, Modal, ... or dsv4's sandbox):

    harbor run -d terminal-bench@2.0 -a dsv4.agent.harbor_agent:Dsv4Agent -m deepseek-v4 \\
        --ak endpoint=http://127.0.0.1:8000/v1 [--ak max_steps=200] [--ak extra='{"max_tokens": 8192}']

The loop (`dsv4.agent.Agent`) runs in a worker thread of Harbor's process, talking to the OpenAI-compatible
endpoint (`endpoint`, or $DSV4_ENDPOINT; the key from $DSV4_API_KEY), with the default tools
(`sandbox_tools`: bash, read_file, write_file) over `EnvironmentShell`. The trial's `agent/trajectory.json` is the
run in ATIF (`dsv4.agent.atif`), dsv4's own beside it as `dsv4-trajectory.json`; token counts go into Harbor's
context. When Harbor cancels the run (its agent timeout), the loop stops at its next model or tool call.
Imports Harbor: it runs under Harbor's Python (>= 3.12), e.g. the `.venv-harbor` that `make test` makes.
"""

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

from harbor.agents.base import BaseAgent
from harbor.agents.capabilities import AgentCapabilities
from harbor.environments.base import BaseEnvironment
from harbor.models.agent.context import AgentContext

import dsv4

from .atif import to_atif
from .client import Completion, OpenAIClient
from .environment_shell import EnvironmentShell
from .errors import ClientError
from .loop import Agent, AgentConfig
from .sandbox_tools import sandbox_tools
from .tools import ToolRegistry
from .trajectory import Trajectory


class Dsv4Agent(BaseAgent):
    """Options (`--ak key=value`): endpoint, max_steps, context_tokens, tool_timeout_s, and extra (a JSON object
    put into every request body: max_tokens, reasoning_effort, temperature, ...)."""

    capabilities = AgentCapabilities(atif=True)

    def __init__(self, logs_dir: Path, model_name: str | None = None, *, endpoint: str | None = None,
                 max_steps: int | str = 100, context_tokens: int | str | None = None,
                 tool_timeout_s: float | str = 120.0, extra: dict | str | None = None, **kwargs: Any):
        super().__init__(logs_dir, model_name, **kwargs)
        self.endpoint = endpoint or os.environ.get("DSV4_ENDPOINT")
        if not self.endpoint:
            raise ValueError("the dsv4 agent needs an endpoint: --ak endpoint=http://HOST:PORT/v1 or $DSV4_ENDPOINT")
        if not model_name:
            raise ValueError("the dsv4 agent needs a model name: -m MODEL (as the endpoint lists it)")
        self.model = model_name  # as given: the endpoint's name, not a provider/model pair for LiteLLM
        self.config = AgentConfig(max_steps=int(max_steps),
                                  context_tokens=int(context_tokens) if context_tokens else None)
        self.tool_timeout_s = float(tool_timeout_s)
        self.extra = json.loads(extra) if isinstance(extra, str) else dict(extra or {})
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra={extra!r}: expected a JSON object (the request body's extra fields)")

    @staticmethod
    def name() -> str:
        return "dsv4"

    def version(self) -> str:
        return dsv4.__version__

    async def setup(self, environment: BaseEnvironment) -> None:
        """Nothing to install: the loop runs in Harbor's process, and its tools are shell commands."""

    async def run(self, instruction: str, environment: BaseEnvironment, context: AgentContext) -> None:
        shell = EnvironmentShell(environment, asyncio.get_running_loop())
        client = _Stoppable(OpenAIClient(self.endpoint, self.model, os.environ.get("DSV4_API_KEY"),
                                         extra=self.extra), shell.stopped)
        agent = Agent(client, ToolRegistry(sandbox_tools(shell, timeout_s=self.tool_timeout_s)), self.config)
        saved = self.logs_dir / "dsv4-trajectory.json"
        try:
            await asyncio.to_thread(agent.run, instruction, saved)
        finally:
            shell.stop()  # cancelled (Harbor's timeout): the thread's command in flight, if any, and its next call
            if saved.is_file():
                self._report(Trajectory.load(saved), context)

    def _report(self, trajectory: Trajectory, context: AgentContext) -> None:
        """Harbor's token counts and the ATIF trajectory, from the run as saved so far."""
        steps = trajectory.steps
        context.n_input_tokens = sum(s.usage.get("prompt_tokens", 0) for s in steps)
        context.n_output_tokens = sum(s.usage.get("completion_tokens", 0) for s in steps)
        context.metadata = {"status": trajectory.status, "error": trajectory.error, "steps": len(steps)}
        atif = to_atif(trajectory, self.name(), self.version(), session_id=self.session_id)
        (self.logs_dir / "trajectory.json").write_text(json.dumps(atif, indent=2))


class _Stoppable:
    """A client that refuses to call the model once the run is stopped (the run then ends with an error)."""

    def __init__(self, client: OpenAIClient, stop: threading.Event):
        self.client, self.stop, self.model = client, stop, client.model

    def complete(self, messages, tools) -> Completion:
        if self.stop.is_set():
            raise ClientError("the run was stopped by Harbor (its agent timeout, or the trial's end)")
        return self.client.complete(messages, tools)
