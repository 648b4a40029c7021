"""`EnvironmentShell`: the part of a `Sandbox` that the default tools use (`run_shell`, `read_file`, `write_file`),
over an environment that runs each command in a fresh shell - a Harbor environment's async `exec` and
`upload_file` (Docker, Daytona, Modal, ...), called from the agent loop's thread.

The `bash` tool promises a persistent bash (cd and exported variables carry over). Each command therefore runs in
bash (sh where an image has none) after restoring the session saved by the previous one - its working directory
and `export -p` - and saves it again on the way out, whatever way the command ends (an EXIT trap; the command
itself runs through `eval`, so a syntax error in it is its own failure, not the wrapper's). The session lives in
`STATE` inside the environment.
Relative paths of read_file / write_file are taken from the session's working directory, as the sandbox does.
"""

import asyncio
import base64
import concurrent.futures
import math
import posixpath
import shlex
import tempfile
import threading
import time
from pathlib import Path

from dsv4.sandbox import SandboxFileError, ShellResult

STATE = "/tmp/.dsv4-session"
MAX_READ_BYTES = 64 << 20  # the sandbox's read_file default


class ShellStopped(Exception):
    """The run was stopped (`EnvironmentShell.stop`: Harbor cancelled it): no further command is made."""


class EnvironmentShell:
    def __init__(self, environment, loop: asyncio.AbstractEventLoop, *, state: str = STATE):
        """`environment`: has `async exec(command, timeout_sec=) -> .stdout/.stderr/.return_code` and
        `async upload_file(host_path, path)`; `loop`: the event loop it runs on (not the caller's thread);
        `state`: the directory in the environment that keeps the session."""
        self.environment, self.loop = environment, loop
        self.stopped = threading.Event()
        self._pending: set[concurrent.futures.Future] = set()
        self._lock = threading.Lock()
        self.state = shlex.quote(state)
        self._cd = f'cd "$(cat {self.state}/cwd 2>/dev/null || pwd)"'

    def run_shell(self, cmd: str, timeout: float = 30.0) -> ShellResult:
        start = time.monotonic()
        try:
            r = self._exec(self._in_session(cmd), timeout)
        except (TimeoutError, RuntimeError) as e:  # Harbor's Docker environment: RuntimeError("... timed out ...")
            if not isinstance(e, TimeoutError) and "timed out" not in str(e):
                raise
            return ShellResult(exit_code=-9, stdout="", stderr=str(e), timed_out=True,
                               duration_s=time.monotonic() - start)
        return ShellResult(exit_code=r.return_code, stdout=r.stdout or "", stderr=r.stderr or "",
                           duration_s=time.monotonic() - start)

    def read_file(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        q = shlex.quote(path)
        r = self._exec(f"{self._cd} && [ -f {q} ] && head -c {max_bytes} -- {q} | base64", 60)
        if r.return_code != 0:
            raise SandboxFileError(2, f"{path}: no such file, or not readable ({(r.stderr or '').strip()[:200]})")
        return base64.b64decode(r.stdout or "")

    def write_file(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        q = shlex.quote(path)
        r = self._exec(f'{self._cd} && mkdir -p -- "$(dirname -- {q})" && cd -- "$(dirname -- {q})" && pwd', 60)
        if r.return_code != 0:
            raise SandboxFileError(13, f"cannot write {path}: {(r.stderr or '').strip()[:200]}")
        target = posixpath.join((r.stdout or "").strip(), posixpath.basename(path))
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "content"
            local.write_bytes(content.encode() if isinstance(content, str) else content)
            local.chmod(mode)
            self._call(self.environment.upload_file(local, target), None)

    def _in_session(self, cmd: str) -> str:
        """`cmd` in the saved session (the environment's own working directory, the first time), saving it after."""
        st = self.state
        save = (f"__dsv4_rc=$?; mkdir -p {st} && export -p > {st}/env.new && mv -f {st}/env.new {st}/env"
                f" && pwd > {st}/cwd; exit $__dsv4_rc")
        script = shlex.quote("\n".join([f"[ -r {st}/env ] && . {st}/env 2>/dev/null", f"{self._cd} 2>/dev/null",
                                        f"trap {shlex.quote(save)} EXIT", f"eval {shlex.quote(cmd)}"]))
        # the tool is bash (Docker's exec runs `sh -c`, dash on Debian and Ubuntu); sh where an image has no bash
        return f"if command -v bash >/dev/null 2>&1; then exec bash -c {script}; else exec sh -c {script}; fi"

    def _exec(self, command: str, timeout: float):
        return self._call(self.environment.exec(command, timeout_sec=math.ceil(timeout)), timeout + 30)

    def stop(self) -> None:
        """Cancels the calls in flight (the caller waiting on one gets ShellStopped at once) and refuses new ones."""
        with self._lock:
            self.stopped.set()
            for future in self._pending:
                future.cancel()

    def _call(self, coroutine, wait_s: float | None):
        with self._lock:
            if self.stopped.is_set():
                coroutine.close()
                raise ShellStopped("the run was stopped: no further command is made")
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
            self._pending.add(future)
        try:
            return future.result(wait_s)
        except concurrent.futures.CancelledError:
            raise ShellStopped("the run was stopped while this command ran") from None
        finally:
            with self._lock:
                self._pending.discard(future)

