"""`AgentRun`: one run of an agent on a task, stepped, saved, forked and resumed.

Saving: the trajectory is written (when the run has a path) once the model has answered, before each tool call
and after each step, with how many of the sandbox journal's records its tool results account for
(`Trajectory.journal_seq`).

Forking (`fork`): the trajectory is copied, the sandbox snapshotted (`Sandbox.snapshot`, incremental: only what
changed since the previous fork is packed) and restored as a new sandbox the fork owns, and the agent's tools
are made again over it; the two runs then share nothing. The model's KV cache is not copied: the fork's next
request starts with the conversation both runs share, which the server's prefix cache (`dsv4.engine`'s
`PrefixCache`, keyed by content) answers from the parent's blocks without a new prefill. The engine's
`Engine.snapshot` saves only a request in the middle of its generation, and between two agent steps no request
of the run is running, so there is nothing more to copy. What a fork's sandbox gets is what a snapshot holds: the
workspace (`workdir`) and the shell session's cwd and exported variables; processes the run left running, /tmp
and other writable directories (a Harbor task's /logs or /protected) are not copied. Its time grows with the
workspace (benchmarks/agent_fork.py: ~0.25 s at 1 MiB, ~1.1 s at 16 MiB on a loaded 2-core machine).

Resuming (`Agent.resume`) after the process was killed (even with SIGKILL): the trajectory is read back and the
sandbox rebuilt from its journal (`Sandbox.resume`), then the run goes on. No tool call runs twice:
- a tool call whose result the trajectory holds is never made again;
- the first tool call of the step in progress that the trajectory has no result for was in flight (or done, its
  result not saved yet). When its tool's effects are all sandbox operations (`Tool.journaled`: bash, read_file,
  write_file) and the sandbox keeps a journal, it is made again with the same arguments: its operations that
  finished before the kill are in the journal, past `journal_seq`, and are answered from it without running (the
  same result, no effect again); the operation that was running when the process died has no record, the rebuilt
  sandbox holds none of what it had done (its workspace, /tmp and processes died with the old sandbox), and it
  runs again, so its effect on the sandbox happens exactly once. A call of any other tool (MCP servers, custom
  tools: their effects are outside the sandbox, not journaled) is not made again: its result tells the model it
  was interrupted and may or may not have taken effect (at most once).
- the calls after it in the step had not started: they run as usual.
- a model call in flight is made again (it has no side effect; its tokens are spent twice).
As with a fork, the rebuilt sandbox holds the journal's workspace and shell state, not processes or files outside
the workspace.
"""

import time
from pathlib import Path
from typing import TYPE_CHECKING

from dsv4.sandbox import Sandbox

from .errors import AgentError
from .trajectory import Trajectory

if TYPE_CHECKING:
    from .client import ChatClient
    from .loop import Agent


class AgentRun:
    """`agent` working on `trajectory`, saved to `save_to` (None: not saved). A run that owns its sandbox (a fork,
    a resumed run) closes it in `close` (or at the end of a `with` block)."""

    def __init__(self, agent: "Agent", trajectory: Trajectory, save_to: Path | None = None, *,
                 owns_sandbox: bool = False, interrupted: bool = False):
        """`interrupted`: the trajectory was saved by a run that died (`Agent.resume`)."""
        self.agent, self.trajectory = agent, trajectory
        self.save_to = None if save_to is None else Path(save_to)
        self.owns_sandbox = owns_sandbox
        self.interrupted = interrupted
        self._clock = time.monotonic() - trajectory.elapsed_s

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._clock

    def checkpoint(self) -> None:
        """Records the time and the journal position in the trajectory, and saves it."""
        t = self.trajectory
        t.elapsed_s = self.elapsed_s
        if self.agent.sandbox is not None and self.agent.sandbox.journal_position is not None:
            t.journal_seq = self.agent.sandbox.journal_position
        if self.save_to is not None:
            t.save(self.save_to)

    def step(self) -> bool:
        """Makes the run's next step (`Agent.advance`); an error that ends the run is recorded as its status.
        Returns whether the run is still going."""
        t = self.trajectory
        if t.status != "running":
            return False
        try:
            interrupted, self.interrupted = self.interrupted, False
            self.agent.advance(t, self.elapsed_s, self.checkpoint, interrupted)
        except AgentError as e:
            t.status, t.error = e.status, str(e)
        finally:
            self.checkpoint()
        return t.status == "running"

    def finish(self, on_step=None) -> Trajectory:
        """Steps to the end of the run; `on_step(trajectory)` after each step made."""
        while self.trajectory.status == "running":
            made = len(self.trajectory.steps)
            self.step()
            if on_step is not None and len(self.trajectory.steps) > made:
                on_step(self.trajectory)
        return self.trajectory

    def fork(self, *, client: "ChatClient | None" = None, save_to: Path | None = None,
             journal: Path | None = None) -> "AgentRun":
        """An independent copy of this run as it is now, in a sandbox of its own (see the module's doc).
        `client`: the fork's model client (default: this run's; an HTTP client holds no state of the run);
        `save_to`: where the fork's trajectory is saved; `journal`: the fork's sandbox journal, for resuming it."""
        sandbox = self.agent.sandbox
        if sandbox is None:
            raise ValueError("a run forks with its sandbox: make the agent with Agent(..., sandbox=...)")
        self.checkpoint()
        copy = Sandbox.restore(sandbox.snapshot(), journal=journal)
        try:
            trajectory = self.trajectory.model_copy(deep=True)
            trajectory.forked_at = len(trajectory.steps)
            trajectory.journal_seq = None
            run = AgentRun(self.agent.over(copy, client), trajectory, save_to, owns_sandbox=True)
            run.checkpoint()
            return run
        except BaseException:
            copy.close()
            raise

    def close(self) -> None:
        if self.owns_sandbox and self.agent.sandbox is not None:
            self.agent.sandbox.close()

    def __enter__(self) -> "AgentRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
