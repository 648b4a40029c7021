"""Harbor-format tasks (Terminal-Bench 2.0's layout), run locally in a dsv4 sandbox.

A task is a directory: `instruction.md` (the prompt), `task.toml` (`[agent] timeout_sec`, `[verifier] timeout_sec`
and `env`), `environment/` (a Dockerfile and the files it copies), `solution/solve.sh` (the reference solution)
and `tests/test.sh` (the verifier, which writes `/logs/verifier/reward.txt` or `reward.json`).

A Dockerfile that only sets up what a sandbox can reproduce from the host's system - `FROM` (ignored: the
sandbox's own root), `WORKDIR`, `ENV`, `COPY`/`ADD` of local files - runs over the host's read-only system with no
image. A task whose Dockerfile does anything else (`RUN`, remote `ADD`, `COPY --from`, ...) is built by buildah or
podman and runs in its image (`dsv4.agent.task_image`), or, without a builder, is reported as skipped with the
instruction that needs a build and the tool to install. Without an image, COPY / ADD follow Docker's destination
rules (`_copy_step`); a destination outside the workspace gets a private writable directory at its top-level path
(e.g. /protected). task.toml's [environment] cpus and memory become the sandbox's limits, `allow_internet = false`
takes its network away, and the verifier's output and exit code are kept in the result.
The tests are uploaded to `/tests` only after the agent is done, as Harbor does, and run apart from the agent's
session (see `_verify`).
"""

import glob
import json
import posixpath
import re
import shlex
import tarfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dsv4.sandbox import Sandbox, SandboxError
from dsv4.sandbox.config import SYSTEM_DIRS

from .loop import Agent
from .trajectory import Trajectory

SCRATCH = ("/tests", "/logs", "/solution")  # Harbor's fixed paths, private and writable in the sandbox
# top-level paths a task cannot write to: the host's read-only system (the sandbox's root) and the kernel's views
READ_ONLY_ROOTS = frozenset(SYSTEM_DIRS) | {"/", "/proc", "/dev", "/sys", "/run", "/boot"}
OUTPUT_HEAD = OUTPUT_TAIL = 4000  # characters of the verifier's stdout / stderr kept in a result, each end


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
    copies: list[tuple[Path, str]] = field(default_factory=list)  # host path -> sandbox path (a dir: its contents)
    scratch_dirs: list[str] = field(default_factory=list)  # writable top-level directories the copies go to
    modes: list[tuple[str, str]] = field(default_factory=list)  # COPY --chmod: (sandbox path, octal mode), in order
    memory_mb: int | None = None  # [environment] memory_mb / memory; None = the sandbox's default
    cpus: float | None = None  # [environment] cpus
    allow_internet: bool | None = None  # [environment] allow_internet; False: no network whatever the run's rules
    unsupported: str | None = None  # why it cannot run here
    build: str | None = None  # why its Dockerfile needs an image build, when it is built (dsv4.agent.task_image)
    image: Path | None = None  # [environment] docker_image, where it names a local OCI layout or image archive
    build_timeout_s: float = 600.0  # [environment] build_timeout_sec (Harbor's default)


@dataclass
class TaskResult:
    name: str
    status: str  # passed (reward 1), failed, skipped, error
    reward: float | None = None
    detail: str = ""
    seconds: float = 0.0
    agent_status: str | None = None  # the model agent's trajectory status
    verifier: dict | None = None  # tests/test.sh's exit_code, timed_out, stdout and stderr (head and tail kept)
    usage: dict[str, int] = field(default_factory=dict)  # the model agent's prompt_tokens, completion_tokens, steps
    phases: dict[str, list[float]] = field(default_factory=dict)
    """[start, end] Unix times of the phases run: environment_setup, agent_execution, verifier."""
    node: dict | None = None  # under --ray, where it ran: {"id": Ray's node id, "host": its hostname}


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
    _apply_resources(task, config.get("environment", {}), path / "task.toml")
    environment = path / "environment"
    if (environment / "Dockerfile").is_file():
        _apply_dockerfile(task, environment)
    elif environment.is_dir():
        task.copies = [(p, f"{task.workdir}/{p.name}") for p in sorted(environment.iterdir())]
    from .task_image import decide  # it builds on this module

    decide(task)
    return task


def _apply_resources(task: Task, env: dict, where: Path) -> None:
    """[environment]'s cpus and memory (Harbor's `memory_mb`, or the older `memory = "2G"`)."""
    try:
        if "memory_mb" in env:
            task.memory_mb = int(env["memory_mb"])
        elif "memory" in env:
            task.memory_mb = _megabytes(str(env["memory"]))
        if "cpus" in env:
            task.cpus = float(env["cpus"])
        if "build_timeout_sec" in env:
            task.build_timeout_s = float(env["build_timeout_sec"])
        image = env.get("docker_image")
        if isinstance(image, str) and image.strip() and (where.parent / image).exists():
            task.image = (where.parent / image).resolve()  # else a registry's name: the Dockerfile is built
        if "allow_internet" in env:
            if not isinstance(env["allow_internet"], bool):
                raise ValueError(f"allow_internet = {env['allow_internet']!r} is not true or false")
            task.allow_internet = env["allow_internet"]
    except (TypeError, ValueError) as e:
        raise TaskError(f"{where}: [environment] {e}") from e
    if (task.memory_mb is not None and task.memory_mb < 16) or (task.cpus is not None and task.cpus <= 0):
        raise TaskError(f"{where}: [environment] memory {task.memory_mb} MiB / cpus {task.cpus}: too small")


def _megabytes(size: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", size, re.IGNORECASE)
    if m is None:
        raise ValueError(f"memory {size!r} is not a size such as 512M or 2G")
    scale = {"": 1 / (1 << 20), "k": 1 / 1024, "m": 1, "g": 1024, "t": 1 << 20}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


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
    """The steps of the Dockerfile's last build stage (BuildKit builds no stage the target does not need), from
    the state of the stage its FROM names, if any; a stage that needs a build spoils only what is built on it."""
    fresh = (task.workdir, task.env, task.copies, task.modes, None, {"/", "/tmp", *_ancestors(task.workdir)})
    stages: dict[str, tuple] = {}
    name = None
    dirs: set[str] = set()  # directories the stage's steps so far leave in the sandbox
    for line in ["FROM scratch", *_dockerfile_lines((environment / "Dockerfile").read_text(encoding="utf-8"))]:
        instruction, _, rest = line.partition(" ")
        op = instruction.upper()
        if op == "FROM":
            if name is not None:
                stages[name] = (task.workdir, task.env, task.copies, task.modes, task.unsupported, dirs)
            words = [w for w in rest.split() if not w.startswith("--")]  # [--platform=...] image [AS name]
            name = words[2].lower() if len(words) == 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            workdir, env, copies, modes, task.unsupported, dirs = stages.get(words[0].lower() if words else "", fresh)
            task.workdir, task.env, task.copies, task.modes = workdir, dict(env), list(copies), list(modes)
            dirs = set(dirs)
            continue
        if task.unsupported is not None:
            continue  # this stage needs a build: only a later stage not built on it can run here
        if op in ("LABEL", "CMD", "ENTRYPOINT", "EXPOSE", "USER", "SHELL"):
            continue  # the sandbox's root and session stand for these
        if op == "WORKDIR":
            task.workdir = _absolute(rest.strip(), task.workdir)
            dirs.update(_ancestors(task.workdir))
        elif op == "ENV":
            words = shlex.split(rest)  # ENV k=v k2=v2, or the old form ENV k v
            if all("=" in w for w in words):
                task.env.update(w.split("=", 1) for w in words)
            elif words:
                task.env[words[0]] = " ".join(words[1:])
        elif op in ("COPY", "ADD"):
            why = _copy_step(task, environment, op, rest, dirs)
            if why is not None:
                task.unsupported = f"its Dockerfile's {op} {rest.strip()[:120]}: {why}"
        else:
            task.unsupported = f"its Dockerfile runs {op} (an image build, which a local sandbox does not do)"
    task.unsupported = task.unsupported or _place_outside_workspace(task)


def _copy_step(task: Task, environment: Path, op: str, rest: str, dirs: set[str]) -> str | None:
    """Add one COPY / ADD of local files to `task.copies` by Docker's rules (or say why it cannot be done here):
    sources are files of the build context (environment/), Go-style wildcards allowed; a directory source is
    copied as its contents; the destination is a directory when it ends with "/" (or is ".", as BuildKit takes
    it) - which several sources require - and a file source copied to a directory that exists at that step goes
    inside it, under its own name; otherwise the destination is the file's new path."""
    try:
        flags, args = _copy_args(rest)
    except ValueError as e:  # shlex: an unclosed quote
        return f"unreadable arguments ({e})"
    if "from" in flags:
        return f"--from={flags['from']} copies out of another image or build stage (needs an image build)"
    for flag in ("parents", "exclude", "keep-git-dir", "checksum"):
        if flag in flags:
            return f"--{flag} is not reproduced here (needs an image build)"
    mode = flags.get("chmod")
    if mode is not None and not re.fullmatch(r"[0-7]{3,4}", mode):
        return f"--chmod={mode}: only octal modes are reproduced here"
    if len(args) < 2:
        return "needs a source and a destination"
    *patterns, dest = args
    if any(a.startswith("<<") for a in patterns):
        return "a here-document source (needs an image build)"
    sources: list[Path] = []
    for pattern in patterns:
        if "://" in pattern or pattern.startswith("git@"):
            return f"{pattern} is remote (needs an image build)"
        matches = _context_matches(environment, pattern)
        if not matches:
            return f"{pattern} matches no file of environment/"
        sources += matches
    if op == "ADD" and any(s.is_file() and tarfile.is_tarfile(s) for s in sources):
        return "ADD unpacks a local archive (needs an image build)"
    into = dest.endswith("/") or dest == "."
    if len(sources) > 1 and not into:
        return f"{len(sources)} sources need a destination ending in / (Docker refuses this step)"
    target = _absolute(dest, task.workdir)
    for src in sources:
        if src.is_dir():
            placed = target
            dirs.update(_ancestors(target))
            dirs.update(_absolute(str(d.relative_to(src)), target) for d in src.rglob("*") if d.is_dir())
        else:
            placed = posixpath.join(target, src.name) if into or target in dirs else target
            dirs.update(_ancestors(posixpath.dirname(placed)))
        task.copies.append((src, placed))
        if mode is not None:  # every file and directory the step copies (a directory source: what is in it)
            copied = sorted(src.rglob("*")) if src.is_dir() else [src]
            task.modes += [(_absolute(str(c.relative_to(src)), placed) if src.is_dir() else placed, mode)
                           for c in copied]
    return None


def _copy_args(rest: str) -> tuple[dict[str, str], list[str]]:
    """(the --flags, the sources and destination), in shell or JSON (`["a", "b", "dest/"]`) form."""
    words = shlex.split(rest)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    tail = " ".join(words).strip()
    if tail.startswith("["):
        try:
            parsed = json.loads(rest[rest.index("["):])
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed):
            return flags, parsed
    return flags, words


def _context_matches(environment: Path, pattern: str) -> list[Path]:
    """The build context's files a source names, its wildcards read as Go's filepath.Match does (`*` stops at
    "/", hidden files included, `[^...]` negates), in lexical order; nothing outside the context."""
    root = environment.resolve()
    pattern = pattern.replace("[^", "[!").rstrip("/") or "."
    found = []
    for m in sorted(glob.glob(pattern.lstrip("/") or ".", root_dir=root, include_hidden=True)):
        p = (root / m).resolve()
        if p == root or root in p.parents:
            found.append(root / posixpath.normpath(m))
    return found


def _ancestors(path: str) -> list[str]:
    out = [path]
    while path != "/":
        path = posixpath.dirname(path)
        out.append(path)
    return out


def _place_outside_workspace(task: Task) -> str | None:
    """Copies outside the workspace (e.g. `/protected/`) go to private writable directories at their top-level
    path - the sandbox's root is the host's read-only one - except into the host's system directories, or as a
    file right under /, which a directory cannot stand for. Returns why the task cannot run, or None."""
    for local, target in task.copies:
        if _within(target, task.workdir) or _within(target, "/tmp"):
            continue
        top = "/" + target.split("/")[1]
        if top in READ_ONLY_ROOTS:
            return f"it copies {local.name} to {target}, in the host's read-only {top} (needs an image build)"
        if top == target and local.is_file():
            return f"it copies {local.name} to the file {target}, right under / (needs an image build)"
        if _within(task.workdir, top):
            return f"it copies {local.name} to {target}, around the workspace {task.workdir} (needs an image build)"
        if top not in task.scratch_dirs and top not in SCRATCH:
            task.scratch_dirs.append(top)
    return None


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _absolute(p: str, workdir: str) -> str:
    return posixpath.normpath(posixpath.join(workdir, p))


def run_task(task: Task, agent: "str | Callable[[Sandbox], Agent]", *, backend: str = "process",
             network: str = "none", trajectory_dir: Path | None = None) -> TaskResult:
    """`agent`: "oracle" (runs solution/solve.sh), "nop" (does nothing), or a function making the model agent for
    the task's sandbox (its tools run there), whose budget of seconds becomes the task's agent timeout."""
    if task.unsupported:
        return TaskResult(task.name, "skipped", detail=task.unsupported)
    start = time.monotonic()
    verifier: dict = {}
    usage: dict[str, int] = {}
    phases: dict[str, list[float]] = {}

    def phase(name: str | None) -> None:
        """Ends the phase running, if any, and starts `name` (None: no other)."""
        now = time.time()
        for times in phases.values():
            if len(times) == 1:
                times.append(now)
        if name is not None:
            phases[name] = [now]
    from .task_image import open_environment  # it builds on this module

    try:
        phase("environment_setup")
        task, sb = open_environment(task, backend, network)
        with sb:
            place_files(task, sb)
            phase("agent_execution")
            agent_status = _act(task, agent, sb, trajectory_dir, usage)
            phase("verifier")
            reward, detail = _verify(task, sb, verifier)
            phase(None)
    except (SandboxError, OSError, TaskError) as e:
        phase(None)
        return TaskResult(task.name, "error", detail=f"{type(e).__name__}: {e}", seconds=time.monotonic() - start,
                          verifier=verifier or None, usage=usage, phases=phases)
    return TaskResult(task.name, "passed" if reward == 1.0 else "failed", reward, detail, time.monotonic() - start,
                      agent_status, verifier or None, usage, phases)


def place_files(task: Task, sb: Sandbox) -> None:
    """The Dockerfile's COPY / ADD steps in a new sandbox: each copy uploaded, then the --chmod modes set."""
    for local, target in task.copies:
        sb.upload(local, target)
    _set_modes(task, sb)


def _set_modes(task: Task, sb: Sandbox, batch: int = 200) -> None:
    """COPY --chmod, applied once the files are in place; a chmod that fails is the task's error."""
    for i in range(0, len(task.modes), batch):
        cmd = "; ".join(f"chmod {mode} -- {shlex.quote(path)}" for path, mode in task.modes[i:i + batch])
        r = sb.run_fresh(f"set -e; {cmd}", env={"PATH": VERIFIER_PATH}, cwd="/", timeout=60)
        if r.exit_code != 0:
            raise TaskError(f"{task.path}: COPY --chmod failed: {(r.stderr or r.stdout).strip()[:200]}")


def sandbox_limits(task: Task) -> dict:
    """`Sandbox.create`'s limits from task.toml's [environment]; the sandbox's defaults for what it leaves out."""
    limits = {"memory_limit_mb": task.memory_mb, "cpu_cores_limit": task.cpus}
    return {k: v for k, v in limits.items() if v is not None}


def _act(task: Task, agent, sb: Sandbox, trajectory_dir: Path | None, usage: dict[str, int]) -> str | None:
    if agent == "nop":
        return None
    if agent == "oracle":
        if not (task.path / "solution").is_dir():
            raise TaskError(f"{task.path}: no solution/ for the oracle")
        sb.upload(task.path / "solution", "/solution")
        r = sb.run_shell("bash /solution/solve.sh", timeout=task.agent_timeout_s)
        return "timed_out" if r.timed_out else None  # verified all the same, as Harbor does
    model = agent(sb)
    model.config = model.config.model_copy(update={"max_seconds": task.agent_timeout_s})
    save_to = trajectory_dir / f"{task.name}.json" if trajectory_dir is not None else None
    trajectory: Trajectory = model.run(task.instruction, save_to=save_to)
    steps = trajectory.steps
    usage.update(steps=len(steps), prompt_tokens=sum(s.usage.get("prompt_tokens", 0) for s in steps),
                 completion_tokens=sum(s.usage.get("completion_tokens", 0) for s in steps))
    return trajectory.status


VERIFIER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def verifier_env(task: Task) -> dict[str, str]:
    """The verifier's whole environment, from the task alone: nothing the agent exported reaches it."""
    return {"PATH": VERIFIER_PATH, "HOME": task.workdir, "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
            **task.env, **task.verifier_env}


def _verify(task: Task, sb: Sandbox, kept: dict) -> tuple[float, str]:
    """Run tests/test.sh as Harbor does, but out of the agent's reach: its processes are killed first (a
    daemon cannot rewrite the reward), /tests and /logs are emptied (nothing planted there is read), and the
    script runs in a fresh shell with `verifier_env` (no PATH, function or BASH_ENV of the agent's session).
    What it printed and its exit code go into `kept`, for the result."""
    env = verifier_env(task)
    sb.stop_processes()
    sb.run_fresh("find /tests /logs -mindepth 1 -delete; mkdir -p /logs/verifier", env=env, cwd="/", timeout=60)
    sb.upload(task.path / "tests", "/tests")
    r = sb.run_fresh("bash /tests/test.sh", env=env, cwd=task.workdir, timeout=task.verifier_timeout_s)
    kept.update(exit_code=r.exit_code, timed_out=r.timed_out, stdout=bounded(r.stdout), stderr=bounded(r.stderr))
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


def bounded(text: str, head: int = OUTPUT_HEAD, tail: int = OUTPUT_TAIL) -> str:
    """`text`'s first `head` and last `tail` characters, with how many were cut between them."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"
