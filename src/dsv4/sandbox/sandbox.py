"""`Sandbox`: one API over every backend, with journaling, snapshots and an idle reaper."""

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dsv4.sandbox import transfer
from dsv4.sandbox.api import (
    DirEntry,
    FreshShellRequest,
    FunctionCallRequest,
    FunctionResult,
    ReadFileRequest,
    RunShellRequest,
    ShellResult,
    StopProcessesRequest,
    WriteFileRequest,
)
from dsv4.sandbox.backend import REPLY_SLACK_S
from dsv4.sandbox.backends import start_backend
from dsv4.sandbox.channel import AgentChannel, OutputCallback
from dsv4.sandbox.config import (
    BackendConfig,
    ContainerConfig,
    FunctionConfig,
    ProcessConfig,
    SandboxSpec,
    VMConfig,
)
from dsv4.sandbox.errors import AgentProtocolError, SandboxClosed, SandboxError, UnsupportedOperation
from dsv4.sandbox.journal import RESTORE, Journal, Recorder, read_journal
from dsv4.sandbox.limits import Limits
from dsv4.sandbox.network import NetworkRules
from dsv4.sandbox.reaper import IdleReaper
from dsv4.sandbox.snapshot import Snapshot, WorkspaceTracker, apply_layers


def backend_config(backend: "str | BackendConfig", rootfs: Path | None) -> BackendConfig:
    """A backend config from a name (`rootfs` fills a container's image)."""
    if not isinstance(backend, str):
        return backend
    if backend == "container":
        return ContainerConfig(image=rootfs)
    configs = {"process": ProcessConfig, "vm": VMConfig, "function": FunctionConfig}
    if backend not in configs:
        from dsv4.sandbox.errors import UnknownBackend

        raise UnknownBackend(f"backend={backend!r} is not one of ('function', 'process', 'container', 'vm')")
    return configs[backend]()


class Sandbox:
    """An isolated place to run commands and keep files; close it (or use `with`) to kill everything in it."""

    def __init__(self, spec: SandboxSpec, backend, recorder: Recorder | None = None):
        self.spec, self.backend, self.recorder = spec, backend, recorder
        self.closed = False
        self.last_used = time.monotonic()
        self.in_flight = 0
        """Calls running now (commands may run concurrently); the idle reaper never closes a busy sandbox."""
        self._count_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._snap_tracker: WorkspaceTracker | None = None
        self._snap_layers: list = []
        self._reaper = IdleReaper(self, spec.ttl_running_stop) if spec.ttl_running_stop else None

    # ---- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, backend: "str | BackendConfig" = "process", *, rootfs: Path | None = None,
        workdir: str = "/workspace", memory_limit_mb: int = 1024, cpu_cores_limit: float = 1.0,
        pids_limit: int = 128, workspace_mb: int | None = None, ttl_running_stop: float | None = None,
        network_rules: "NetworkRules | str | list[str] | None" = None, env: dict[str, str] | None = None,
        max_output_bytes: int = 1 << 20, journal: Path | None = None, functions: dict | None = None,
        scratch_dirs: tuple[str, ...] = (),
    ) -> "Sandbox":
        """Start a sandbox; `BackendUnavailable` says why when the backend cannot run on this machine.

        Everything in it dies with this process, even when it is killed with SIGKILL."""
        limits = Limits(memory_limit_mb=memory_limit_mb, cpu_cores_limit=cpu_cores_limit,
                        pids_limit=pids_limit, max_output_bytes=max_output_bytes, workspace_mb=workspace_mb)
        spec = SandboxSpec(backend=backend_config(backend, rootfs), limits=limits, workdir=workdir,
                           scratch_dirs=tuple(scratch_dirs),
                           network_rules=NetworkRules.of(network_rules), env=env or {},
                           ttl_running_stop=ttl_running_stop)
        return cls.from_spec(spec, journal=journal, functions=functions)

    @classmethod
    def from_spec(cls, spec: SandboxSpec, *, journal: Path | None = None, functions: dict | None = None):
        backend = start_backend(spec, functions)
        try:
            recorder = None if journal is None else _recorder(spec, backend, Journal.start(journal, spec), [])
            return cls(spec, backend, recorder)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def resume(cls, journal: Path, *, functions: dict | None = None, done: int = 0) -> "Sandbox":
        """A new sandbox in the state the journal ends in; the recorded calls, made again in the same order,
        return their recorded results without running, and later calls run live (and are journaled).

        `done`: how many records the caller already has the results of (e.g. an agent's trajectory, from
        `journal_position`); only the calls recorded after them are answered from the journal."""
        spec, records = read_journal(journal)
        if not 0 <= done <= len(records):
            raise SandboxError(f"done={done}: journal={str(journal)!r} holds {len(records)} records")
        done = max(done, next((i for i, r in enumerate(records) if r.op != RESTORE), len(records)))
        backend = start_backend(spec, functions)
        try:
            layers = [r.layer for r in records if r.layer is not None]
            if layers:
                apply_layers(backend, spec.workdir, layers)
            last = next((r for r in reversed(records) if r.cwd is not None), None)
            if last is not None:
                backend.session(last.cwd, last.env)
            return cls(spec, backend, _recorder(spec, backend, Journal(journal), records[done:], len(records)))
        except BaseException:
            backend.close()
            raise

    def close(self) -> None:
        """Kill every process of the sandbox and delete its private state. Idempotent; `closed` turns true
        once everything is gone."""
        with self._close_lock:
            if self.closed:
                return
            if self._reaper is not None:
                self._reaper.stop()
            self.backend.close()
            if self.recorder is not None:
                self.recorder.journal.close()
            self.closed = True

    @property
    def journal_position(self) -> int | None:
        """How many journal records the calls made so far account for (None without a journal): what
        `resume(done=...)` takes to answer only the calls recorded after them."""
        return None if self.recorder is None else self.recorder.position

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- operations ------------------------------------------------------------------------------
    def run_shell(
        self, cmd: str, timeout: float = 30.0, stdin: bytes | str | None = None, *,
        max_output_bytes: int | None = None, on_output: OutputCallback | None = None,
    ) -> ShellResult:
        """Run `cmd` in the persistent shell session (cwd and exported variables carry over)."""
        if isinstance(stdin, str):
            stdin = stdin.encode()
        req = RunShellRequest(cmd=cmd, timeout=timeout, stdin=stdin, max_output_bytes=max_output_bytes)
        result = self._op("run_shell", req, lambda: self.backend.run_shell(req, on_output),
                          lambda r: r.model_dump(mode="json"), ShellResult.model_validate)
        if on_output is not None and self.recorder is not None and self.recorder.replaying:
            on_output("stdout", result.stdout.encode())
        return result

    def run_fresh(self, cmd: str, env: dict[str, str], cwd: str, timeout: float = 30.0, *,
                  max_output_bytes: int | None = None) -> ShellResult:
        """Run `cmd` in a fresh shell with exactly `env` (PATH included) in `cwd`, apart from the session: what
        earlier commands exported, defined or changed in the session cannot reach it, and it changes nothing
        there (e.g. a verifier after an agent; see also `stop_processes`)."""
        req = FreshShellRequest(cmd=cmd, timeout=timeout, max_output_bytes=max_output_bytes, env=env, cwd=cwd)
        cap = max_output_bytes or self.spec.limits.max_output_bytes

        def run() -> ShellResult:
            r = self._channel().request("exec", timeout + REPLY_SLACK_S, cmd=cmd, timeout=timeout, env=env,
                                        cwd=cwd, max_output_bytes=cap)
            return ShellResult.from_agent(r)
        return self._op("run_fresh", req, run, lambda r: r.model_dump(mode="json"), ShellResult.model_validate)

    def stop_processes(self) -> int:
        """Kill every process in the sandbox (commands still running, daemons they left); the shell session's
        cwd and variables stay. Returns how many were killed."""
        return self._op("stop_processes", StopProcessesRequest(),
                        lambda: self._channel().request("stop_others", transfer.PROGRESS_TIMEOUT_S)["killed"],
                        lambda r: r, lambda r: r)

    def read_file(self, path: str, max_bytes: int = 64 << 20) -> bytes:
        req = ReadFileRequest(path=path, max_bytes=max_bytes)
        return self._op("read_file", req, lambda: transfer.read_bytes(self._channel(), path, max_bytes),
                        _b64, base64.b64decode)

    def write_file(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        if isinstance(content, str):
            content = content.encode()
        req = WriteFileRequest(path=path, content=content, mode=mode)
        self._op("write_file", req, lambda: transfer.write_from(self._channel(), path, content, mode),
                 lambda r: None, lambda r: None)

    def list_dir(self, path: str = ".") -> list[DirEntry]:
        req = ReadFileRequest(path=path)
        return self._op("list_dir", req, lambda: self.backend.list_dir(path),
                        lambda r: [e.model_dump() for e in r], lambda r: [DirEntry(**e) for e in r])

    def upload(self, host_path: Path, path: str) -> None:
        """Copy a host file or directory tree to `path` in the sandbox, streamed (bounded host memory)."""
        host_path = Path(host_path)
        if host_path.is_dir():
            self._live(lambda: transfer.upload_tree(self._channel(), host_path, path))
            return
        with open(host_path, "rb") as f:
            mode = host_path.stat().st_mode & 0o777
            self._live(lambda: transfer.write_from(self._channel(), path, f, mode))

    def download(self, path: str, host_path: Path, max_bytes: int = transfer.DOWNLOAD_LIMIT) -> None:
        """Copy a sandbox file or directory tree to `host_path`, streamed through the host's disk (bounded
        memory); links that would resolve outside `host_path` are not created."""
        self._live(lambda: transfer.download(self._channel(), path, Path(host_path), max_bytes))

    def set_network_rules(self, rules: "NetworkRules | str | list[str]") -> None:
        """Change what the running sandbox may reach, e.g. between task phases (process and bwrap containers;
        a sandbox created with `none` keeps it)."""
        if not hasattr(self.backend, "update_network"):
            raise UnsupportedOperation(f"backend={self.spec.backend.type!r} cannot change its network rules")
        self._live(lambda: self.backend.update_network(NetworkRules.of(rules)))

    def call(self, name: str, *args, timeout: float = 30.0, **kwargs) -> FunctionResult:
        """Call a registered function (`function` backend only)."""
        if not hasattr(self.backend, "call"):
            raise UnsupportedOperation(f"backend={self.spec.backend.type!r} has no registered functions")
        req = FunctionCallRequest(name=name, args=list(args), kwargs=kwargs, timeout=timeout)
        return self._op("call", req, lambda: self.backend.call(req), lambda r: r.model_dump(mode="json"),
                        FunctionResult.model_validate)

    # ---- snapshots -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """An incremental snapshot: a new layer with what changed since this sandbox's previous snapshot."""
        def take() -> Snapshot:
            if self._snap_tracker is None:
                self._snap_tracker = WorkspaceTracker.empty(self.backend, self.spec.workdir)
            layer = self._snap_tracker.capture()
            if layer is not None:
                self._snap_layers.append(layer)
            cwd, env = self.backend.session()
            return Snapshot(spec=self.spec, layers=tuple(self._snap_layers), cwd=cwd, env=env)
        return self._live(take)

    @classmethod
    def restore(cls, snap: Snapshot, *, functions: dict | None = None, journal: Path | None = None) -> "Sandbox":
        """A new sandbox whose workspace and shell state are those of `snap` (the original is untouched).
        With `journal`, it starts with the snapshot's layers, so `Sandbox.resume` rebuilds the restored sandbox."""
        sb = cls.from_spec(snap.spec, functions=functions)
        try:
            apply_layers(sb.backend, snap.spec.workdir, snap.layers)
            sb.backend.session(snap.cwd, snap.env)
            sb._snap_layers = list(snap.layers)
            sb._snap_tracker = WorkspaceTracker(sb.backend, snap.spec.workdir)
            if journal is not None:  # its tracker starts from the restored workspace: later layers are changes
                sb.recorder = _recorder(snap.spec, sb.backend, Journal.start(journal, snap.spec), [])
                sb.recorder.restored(snap.layers, snap.cwd, snap.env)
            return sb
        except BaseException:
            sb.close()
            raise

    # ---- plumbing --------------------------------------------------------------------------------
    def _channel(self) -> AgentChannel:
        channel = getattr(self.backend, "channel", None)
        if channel is None:
            raise UnsupportedOperation(f"backend={self.spec.backend.type!r} has no shell or files")
        return channel

    def _live(self, fn: Callable):
        if self.closed:
            raise SandboxClosed(f"sandbox (backend={self.spec.backend.type!r}) is closed")
        with self._count_lock:
            self.in_flight += 1
            self.last_used = time.monotonic()
        try:
            return fn()
        except AgentProtocolError:  # the agent broke the protocol: it may be hijacked, so the sandbox goes
            self.close()
            raise
        finally:
            with self._count_lock:
                self.in_flight -= 1
                self.last_used = time.monotonic()

    def _op(self, op: str, req, run: Callable, encode: Callable, decode: Callable):
        if self.recorder is None:
            return self._live(run)
        request = req.model_dump(mode="json")
        return self._live(lambda: self.recorder.call(op, request, run, encode, decode))


def _recorder(spec: SandboxSpec, backend, journal: Journal, pending: list, seq: int | None = None) -> Recorder:
    if spec.backend.type == "function":  # stateless: nothing to capture between calls
        return Recorder(journal, pending, seq=seq)
    return Recorder(journal, pending, WorkspaceTracker(backend, spec.workdir), backend.session, seq)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
