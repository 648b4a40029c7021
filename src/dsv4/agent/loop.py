"""`Agent`: the tool-use loop. Each step asks the model (with every tool, every time) and runs the tool calls it
made, appending both to the conversation; the run ends when the model answers without calling a tool, or when a
budget is spent or the endpoint fails, each with its status in the trajectory.

    agent = Agent(OpenAIClient("http://127.0.0.1:8000/v1", "deepseek-v4"), ToolRegistry(sandbox_tools(sb)))
    trajectory = agent.run("Make the tests in /workspace pass.", save_to=Path("run.json"))
"""

import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from dsv4.encoding.salvage import salvage_tool_calls
from dsv4.sandbox import Sandbox

from .client import ChatClient, Completion
from .context import chars, compact, estimate_tokens
from .errors import AgentError, ContextExhausted, LimitsExceeded
from .messages import FunctionCall, Message, ToolCall
from .run import AgentRun
from .sandbox_tools import sandbox_tools
from .tools import ToolOutput, ToolRegistry
from .trajectory import Step, ToolResult, Trajectory

INTERRUPTED = ("error: this call of {name} was running when the agent's process died, and was not made again: "
               "it may or may not have taken effect. Check before calling it again.")

SYSTEM_PROMPT = (
    "You are an autonomous agent working in a sandboxed Linux workspace. Use the tools to inspect, change and run "
    "things until the task is done; check your work by running it. When you are done, reply with a short summary "
    "of what you did and the result, without calling a tool."
)


class AgentConfig(BaseModel):
    system_prompt: str = SYSTEM_PROMPT
    max_steps: int = Field(100, gt=0)
    """Model calls at most."""
    max_tokens: int | None = Field(None, gt=0)
    """Prompt + completion tokens summed over the run's calls at most (None: no limit)."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock seconds at most (None: no limit)."""
    context_tokens: int | None = Field(None, gt=0)
    """The model's context (None: unknown; the conversation is compacted only when the endpoint says it is full)."""
    compact_at: float = Field(0.85, gt=0, le=1)
    """Compact when the conversation reaches this fraction of the context ..."""
    compact_to: float = Field(0.6, gt=0, le=1)
    """... down to this fraction (see `dsv4.agent.context`)."""
    keep_recent: int = Field(4, ge=1)
    """Steps whose tool outputs and reasoning are never elided."""
    strict_tools: bool = False
    """Offer the tools as strict functions (`"strict": true`, OpenAI's strict form: `tools.strict_parameters`): a
    server that enforces them (dsv4's does, under tool_choice auto) makes every call the model writes match its
    tool's parameters. The prompt renders the strict form of each schema, so the model reads a different prompt."""
    salvage_tool_calls: bool = True
    """A reply without tool calls whose content holds one written as text (a declared tool, valid arguments, on
    lines of its own outside code: `dsv4.encoding.salvage`) runs it as a call; the step records a warning."""


class Agent:
    """The loop's settings: a model client, the tools and the budgets. With `sandbox` (the sandbox the tools run
    in), a run can be forked (`AgentRun.fork`) and, when the sandbox keeps a journal, resumed after a crash
    (`resume`); `tools_for(sandbox)` makes the same tools over another sandbox (default: `sandbox_tools` alone)."""

    def __init__(self, client: ChatClient, tools: ToolRegistry, config: AgentConfig | None = None, *,
                 sandbox: Sandbox | None = None, tools_for: Callable[[Sandbox], ToolRegistry] | None = None):
        self.client, self.tools, self.config = client, tools, config or AgentConfig()
        self.sandbox = sandbox
        self.tools_for = tools_for or (lambda sb: ToolRegistry(sandbox_tools(sb)))

    def over(self, sandbox: Sandbox, client: ChatClient | None = None) -> "Agent":
        """This agent with its tools over `sandbox` (and `client`, when given)."""
        return Agent(client or self.client, self.tools_for(sandbox), self.config, sandbox=sandbox,
                     tools_for=self.tools_for)

    def start(self, task: str, save_to=None) -> AgentRun:
        """A new run of `task`, not stepped yet (`AgentRun.step`, `finish`, `fork`)."""
        messages = [Message(role="system", content=self.config.system_prompt), Message(role="user", content=task)]
        trajectory = Trajectory(task=task, model=self.client.model, tools=list(self.tools.tools), messages=messages)
        run = AgentRun(self, trajectory, save_to)
        run.checkpoint()
        return run

    def run(self, task: str, save_to=None, on_step=None) -> Trajectory:
        """Runs to the end; never raises for an ending of the run (see `Trajectory.status`). `on_step(trajectory)`
        is called after each step (to show progress)."""
        return self.start(task, save_to).finish(on_step)

    def resume(self, save_to, journal=None) -> AgentRun:
        """The run saved at `save_to`, to go on from where it was killed (see `dsv4.agent.run` for what happens
        to the tool call in flight then). With `journal` (the journal of the run's sandbox), the run gets a new
        sandbox in the journal's state, which it owns (`AgentRun.close`); without, its tools are this agent's."""
        trajectory = Trajectory.load(save_to)
        if journal is None:
            return AgentRun(self, trajectory, save_to, interrupted=True)
        sandbox = Sandbox.resume(journal, done=trajectory.journal_seq or 0)
        try:
            return AgentRun(self.over(sandbox), trajectory, save_to, owns_sandbox=True, interrupted=True)
        except BaseException:
            sandbox.close()
            raise

    def advance(self, trajectory: Trajectory, elapsed_s: float, checkpoint: Callable[[], None] | None = None,
                interrupted: bool = False):
        """The run's next step: the tool calls left of a step in progress (a resumed run: `interrupted`), else,
        within the budgets and the context, one `step`; raises the `AgentError` that ends the run."""
        if trajectory.partial is not None:
            self.finish_step(trajectory, checkpoint, interrupted)
            return
        self._check_budget(trajectory, elapsed_s)
        self._keep_in_context(trajectory)
        try:
            self.step(trajectory, checkpoint)
        except ContextExhausted:  # the endpoint counted more than the estimate: compact, retry once
            limit = self.config.context_tokens or estimate_tokens(trajectory)
            if limit is None or not compact(trajectory, int(limit * self.config.compact_to / 2),
                                            self.config.keep_recent):
                raise
            self.step(trajectory, checkpoint)

    def _keep_in_context(self, trajectory: Trajectory):
        c = self.config
        estimate = estimate_tokens(trajectory)
        if c.context_tokens is not None and estimate is not None and estimate >= c.compact_at * c.context_tokens:
            compact(trajectory, int(c.compact_to * c.context_tokens), c.keep_recent)

    def step(self, trajectory: Trajectory, checkpoint: Callable[[], None] | None = None):
        """One model call and the tool calls it made; `checkpoint()` runs before each tool call, the reply and the
        calls before it in the trajectory (`AgentRun` saves it there)."""
        start = time.monotonic()
        sent = chars(trajectory.messages)
        schemas = self.tools.schemas(self.config.strict_tools)
        completion = self.client.complete(trajectory.messages, schemas)
        warnings = list(completion.warnings)
        if self.config.salvage_tool_calls:
            warnings += _salvage(completion, schemas)
        trajectory.messages.append(completion.message)
        trajectory.partial = Step(index=len(trajectory.steps), finish_reason=completion.finish_reason,
                                  usage=completion.usage, prompt_chars=sent, warnings=warnings,
                                  duration_s=time.monotonic() - start)
        self.finish_step(trajectory, checkpoint)

    def finish_step(self, trajectory: Trajectory, checkpoint: Callable[[], None] | None = None,
                    interrupted: bool = False):
        """Runs the tool calls of the step in progress that have no result yet, in order, then closes the step.
        `interrupted`: the first of them was in flight when the run died; it is made again only when its tool's
        effects are in the sandbox's journal, else its result says so (it may have had its effect)."""
        step = trajectory.partial
        reply = trajectory.messages[-1 - len(step.tool_results)]
        if reply.role != "assistant":
            raise AgentError(f"the trajectory's step {step.index} in progress follows no assistant turn")
        mark = time.monotonic()
        for call in (reply.tool_calls or [])[len(step.tool_results):]:
            if checkpoint is not None:
                checkpoint()
            if interrupted and not self._replayable(call.function.name):
                out = ToolOutput(INTERRUPTED.format(name=call.function.name), False)
            else:
                out = self.tools.call(call.function.name, call.function.arguments)
            interrupted = False
            step.tool_results.append(ToolResult(call_id=call.id, name=call.function.name, ok=out.ok,
                                                output=out.text, duration_s=out.duration_s))
            trajectory.messages.append(Message(role="tool", tool_call_id=call.id, content=out.text))
        step.duration_s += time.monotonic() - mark
        trajectory.steps.append(step)
        trajectory.partial = None
        if not reply.tool_calls:
            trajectory.status = "length" if step.finish_reason == "length" else "finished"

    def _replayable(self, name: str) -> bool:
        """Whether a call of tool `name` can be made again after a crash without repeating its effect."""
        tool = self.tools.tools.get(name)
        journal = self.sandbox is not None and self.sandbox.journal_position is not None
        return tool is None or (tool.journaled and journal)  # an unknown tool: the call only fails

    def _check_budget(self, trajectory: Trajectory, elapsed: float):
        c = self.config
        if len(trajectory.steps) >= c.max_steps:
            raise LimitsExceeded(f"max_steps={c.max_steps} model calls made without a final answer")
        if c.max_tokens is not None and trajectory.tokens() >= c.max_tokens:
            raise LimitsExceeded(f"max_tokens={c.max_tokens} spent ({trajectory.tokens()} tokens)")
        if c.max_seconds is not None and elapsed >= c.max_seconds:
            raise LimitsExceeded(f"max_seconds={c.max_seconds:g} passed ({elapsed:.1f} s)")


def _salvage(completion: Completion, schemas: list[dict]) -> list[dict]:
    """Turns the tool calls written as text in a reply that made none into calls (the content is kept as the model
    wrote it); returns the warnings saying so, or why a call written as text was not taken."""
    reply = completion.message
    if reply.tool_calls or completion.finish_reason == "length" or not reply.content:
        return []
    found = salvage_tool_calls(reply.content, schemas)
    if found.calls:
        reply.tool_calls = [ToolCall(id=c.call.id, function=FunctionCall(name=c.call.name, arguments=c.call.arguments))
                            for c in found.calls]
    return found.warnings()
