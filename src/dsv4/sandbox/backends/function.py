"""The `function` backend: registered Python callables run in a pool of worker processes.

Each worker is a forked process holding the registry; RLIMIT_AS lets it grow by the sandbox's memory limit.
A call that outlives its timeout or dies (memory, crash) has its worker killed and replaced; the pool stays
warm.
"""

import multiprocessing
import resource
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from dsv4.sandbox.api import FunctionCallRequest, FunctionResult
from dsv4.sandbox.config import FunctionConfig, SandboxSpec
from dsv4.sandbox.errors import BackendUnavailable, FunctionNotRegistered, SandboxClosed, UnsupportedOperation


def _worker(conn: Connection, parent_end: Connection, functions: dict[str, Callable],
            memory_bytes: int) -> None:
    parent_end.close()  # so that the pipe reaches EOF, and the worker exits, once the owner is gone
    # The limit is growth over what the fork inherited (the owner may hold gigabytes of address space).
    with open("/proc/self/statm") as f:
        inherited = int(f.read().split()[0]) * resource.getpagesize()
    cap = inherited + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    while True:
        try:
            name, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, functions[name](*args, **kwargs), None))
        except BaseException as e:  # noqa: BLE001 - the failure is the call's result
            conn.send((False, None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"))


class Worker:
    """One warm process and the pipe to it."""

    def __init__(self, ctx, functions: dict[str, Callable], memory_bytes: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.conn, functions, memory_bytes), daemon=True)
        self.proc.start()
        child.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


class FunctionBackend:
    """A fixed-size pool; `call` borrows an idle worker, waiting for one when all are busy."""

    workspace = None

    def __init__(self, spec: SandboxSpec, functions: dict[str, Callable]):
        cfg = spec.backend
        assert isinstance(cfg, FunctionConfig)
        if "fork" not in multiprocessing.get_all_start_methods():
            raise BackendUnavailable("the function backend needs the 'fork' start method (Linux only)")
        self.functions = dict(functions)
        self.memory_bytes = spec.limits.memory_limit_mb << 20
        self._ctx = multiprocessing.get_context("fork")
        self._cond = threading.Condition()
        self._idle = [self._spawn() for _ in range(cfg.workers)]
        self._busy: set[Worker] = set()
        self._closed = False

    def _spawn(self) -> Worker:
        return Worker(self._ctx, self.functions, self.memory_bytes)

    def call(self, req: FunctionCallRequest) -> FunctionResult:
        if req.name not in self.functions:
            have = sorted(self.functions)
            raise FunctionNotRegistered(f"function name={req.name!r} is not registered; have {have}")
        worker = self._borrow()
        started = time.monotonic()
        try:
            worker.conn.send((req.name, req.args, req.kwargs))
            if not worker.conn.poll(req.timeout):
                worker = self._replace(worker)
                error = f"TimeoutError: no result within timeout={req.timeout}s"
                return FunctionResult(ok=False, error=error, timed_out=True,
                                      duration_s=time.monotonic() - started)
            ok, value, error = worker.conn.recv()
        except (EOFError, OSError) as e:
            worker.proc.join(5)
            code = worker.proc.exitcode
            worker = self._replace(worker)
            return FunctionResult(ok=False, error=f"WorkerDied: {type(e).__name__}, exit code {code}",
                                  duration_s=time.monotonic() - started)
        finally:
            self._give_back(worker)
        return FunctionResult(ok=ok, value=value, error=error, duration_s=time.monotonic() - started)

    def _borrow(self) -> Worker:
        with self._cond:
            self._cond.wait_for(lambda: self._idle or self._closed)
            if self._closed:
                raise SandboxClosed("the function pool is closed")
            worker = self._idle.pop()
            self._busy.add(worker)
            return worker

    def _replace(self, worker: Worker) -> Worker:
        with self._cond:
            self._busy.discard(worker)
        worker.kill()
        fresh = self._spawn()
        with self._cond:
            self._busy.add(fresh)
        return fresh

    def _give_back(self, worker: Worker) -> None:
        with self._cond:
            self._busy.discard(worker)
            if self._closed:
                worker.kill()
            else:
                self._idle.append(worker)
            self._cond.notify()

    def pids(self) -> list[int]:
        with self._cond:
            return [w.proc.pid for w in (*self._idle, *self._busy)]

    def is_alive(self) -> bool:
        return not self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers, self._idle = self._idle, []
            self._cond.notify_all()
        for w in workers:
            w.kill()
        with self._cond:
            busy = list(self._busy)
        for w in busy:
            w.proc.kill()

    def __getattr__(self, name: str):
        if name in ("run_shell", "read_file", "write_file", "list_dir", "pack", "unpack", "scan", "session"):
            raise UnsupportedOperation(f"the function backend has no {name}(); use Sandbox.call()")
        raise AttributeError(name)
