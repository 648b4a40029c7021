"""Harbor-format tasks (Terminal-Bench 2.0's layout), run locally in a dsv4 sandbox.

A task is a directory: `instruction.md` (the prompt), `task.toml` (`[agent] timeout_sec`, `[verifier] timeout_sec`
and `env`), `environment/` (a Dockerfile and the files it copies), `solution/solve.sh` (the reference solution)
and `tests/test.sh` (the verifier, which writes `/logs/verifier/reward.txt` or `reward.json`).

Images are not built here: a Dockerfile may only set up what a sandbox can reproduce from the host's system -
`FROM` (ignored: the sandbox's own root), `WORKDIR`, `ENV`, `COPY`/`ADD` of local files. A task whose Dockerfile
runs anything else (`RUN`, remote `ADD`, ...) is reported as skipped, with the instruction that needs a build.
The tests are uploaded to `/tests` only after the agent is done, as Harbor does, and run apart from the agent's
session (see `_verify`).
"""

import json
import posixpath
import shlex
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dsv4.sandbox import Sandbox, SandboxError

from .loop import Agent
from .trajectory import Trajectory

SCRATCH = ("/tests", "/logs", "/solution")  # Harbor's fixed paths, private and writable in the sandbox


@dataclass
class Task:
    name: str
    path: Path
    instruction: str
    agent_timeout_s: float = 600.0
    verifier_timeout_s: float = 600.0
    verifier_env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/app"
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[Path, str]] = field(default_factory=list)  # host path -> sandbox path
    unsupported: str | None = None  # why it cannot run here


@dataclass
class TaskResult:
    name: str
    status: str  # passed (reward 1), failed, skipped, error
    reward: float | None = None
    detail: str = ""
    seconds: float = 0.0
    agent_status: str | None = None  # the model agent's trajectory status


class TaskError(ValueError):
    """A task directory that does not follow the format; names the file and what is wrong."""


def load_task(path: Path) -> Task:
    path = Path(path)
    for required in ("instruction.md", "tests/test.sh"):
        if not (path / required).is_file():
            raise TaskError(f"{path}: no {required}")
    config = {}
    if (path / "task.toml").is_file():
        try:
            config = tomllib.loads((path / "task.toml").read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise TaskError(f"{path / 'task.toml'}: {e}") from e
    task = Task(path.name, path, (path / "instruction.md").read_text(encoding="utf-8"),
                agent_timeout_s=float(config.get("agent", {}).get("timeout_sec", 600.0)),
                verifier_timeout_s=float(config.get("verifier", {}).get("timeout_sec", 600.0)),
                verifier_env={k: str(v) for k, v in config.get("verifier", {}).get("env", {}).items()})
    environment = path / "environment"
    if (environment / "Dockerfile").is_file():
        _apply_dockerfile(task, environment)
    elif environment.is_dir():
        task.copies = [(p, f"{task.workdir}/{p.name}") for p in sorted(environment.iterdir())]
    return task


def _dockerfile_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return lines + ([current] if current.strip() else [])


def _apply_dockerfile(task: Task, environment: Path):
    for line in _dockerfile_lines((environment / "Dockerfile").read_text(encoding="utf-8")):
        instruction, _, rest = line.partition(" ")
        op = instruction.upper()
        if op in ("FROM", "LABEL", "CMD", "ENTRYPOINT", "EXPOSE", "USER", "SHELL"):
            continue  # the sandbox's root and session stand for these
        if op == "WORKDIR":
            task.workdir = _absolute(rest.strip(), task.workdir)
        elif op == "ENV":
            words = shlex.split(rest)  # ENV k=v k2=v2, or the old form ENV k v
            if all("=" in w for w in words):
                task.env.update(w.split("=", 1) for w in words)
            elif words:
                task.env[words[0]] = " ".join(words[1:])
        elif op in ("COPY", "ADD"):
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            *sources, dest = args
            for src in sources:
                if "://" in src or not (environment / src).exists():
                    task.unsupported = f"its Dockerfile's {op} {src} is not a file of environment/"
                    return
                target = _absolute(dest, task.workdir)
                local = environment / src
                if local.is_dir() or len(sources) > 1 or dest.endswith("/"):
                    target = target.rstrip("/") + ("" if local.is_dir() else f"/{local.name}")
                task.copies.append((local, target))
        else:
            task.unsupported = f"its Dockerfile runs {op} (an image build, which a local sandbox does not do)"
            return


def _absolute(p: str, workdir: str) -> str:
    return posixpath.normpath(posixpath.join(workdir, p))


def run_task(task: Task, agent: "str | Callable[[Sandbox], Agent]", *, backend: str = "process",
             network: str = "none", trajectory_dir: Path | None = None) -> TaskResult:
    """`agent`: "oracle" (runs solution/solve.sh), "nop" (does nothing), or a function making the model agent for
    the task's sandbox (its tools run there), whose budget of seconds becomes the task's agent timeout."""
    if task.unsupported:
        return TaskResult(task.name, "skipped", detail=task.unsupported)
    start = time.monotonic()
    try:
        with Sandbox.create(backend, workdir=task.workdir, scratch_dirs=SCRATCH, env=task.env,
                            network_rules=network) as sb:
            for local, target in task.copies:
                sb.upload(local, target)
            agent_status = _act(task, agent, sb, trajectory_dir)
            reward, detail = _verify(task, sb)
    except (SandboxError, OSError, TaskError) as e:
        return TaskResult(task.name, "error", detail=f"{type(e).__name__}: {e}", seconds=time.monotonic() - start)
    return TaskResult(task.name, "passed" if reward == 1.0 else "failed", reward, detail, time.monotonic() - start,
                      agent_status)


def _act(task: Task, agent, sb: Sandbox, trajectory_dir: Path | None) -> str | None:
    if agent == "nop":
        return None
    if agent == "oracle":
        if not (task.path / "solution").is_dir():
            raise TaskError(f"{task.path}: no solution/ for the oracle")
        sb.upload(task.path / "solution", "/solution")
        sb.run_shell("bash /solution/solve.sh", timeout=task.agent_timeout_s)
        return None
    model = agent(sb)
    model.config = model.config.model_copy(update={"max_seconds": task.agent_timeout_s})
    save_to = trajectory_dir / f"{task.name}.json" if trajectory_dir is not None else None
    trajectory: Trajectory = model.run(task.instruction, save_to=save_to)
    return trajectory.status


VERIFIER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def verifier_env(task: Task) -> dict[str, str]:
    """The verifier's whole environment, from the task alone: nothing the agent exported reaches it."""
    return {"PATH": VERIFIER_PATH, "HOME": task.workdir, "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
            **task.env, **task.verifier_env}


def _verify(task: Task, sb: Sandbox) -> tuple[float, str]:
    """Run tests/test.sh as Harbor does, but out of the agent's reach: its processes are killed first (a
    daemon cannot rewrite the reward), /tests and /logs are emptied (nothing planted there is read), and the
    script runs in a fresh shell with `verifier_env` (no PATH, function or BASH_ENV of the agent's session)."""
    env = verifier_env(task)
    sb.stop_processes()
    sb.run_fresh("find /tests /logs -mindepth 1 -delete; mkdir -p /logs/verifier", env=env, cwd="/", timeout=60)
    sb.upload(task.path / "tests", "/tests")
    r = sb.run_fresh("bash /tests/test.sh", env=env, cwd=task.workdir, timeout=task.verifier_timeout_s)
    tail = (r.stdout + r.stderr)[-500:].strip()
    for name in ("reward.txt", "reward.json"):
        try:
            raw = sb.read_file(f"/logs/verifier/{name}").decode().strip()
        except SandboxError:
            continue
        try:
            reward = float(raw) if name == "reward.txt" else float(json.loads(raw)["reward"])
        except (ValueError, KeyError, TypeError):
            return 0.0, f"unreadable {name}: {raw[:100]!r}"
        return reward, f"test.sh exit {r.exit_code}"
    return 0.0, f"no reward file; test.sh exit {r.exit_code}{' (timed out)' if r.timed_out else ''}: {tail}"
