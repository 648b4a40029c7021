"""`serving(app)`: the app on a free local port in a background thread, for in-process clients (`dsv4 agent`
without an endpoint, tests); `serve_process(args)`: `dsv4 serve` in a child process (benchmarks, tests). Both are
stopped when the block ends."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from .connections import ConnectionLimits, uvicorn_config


@contextmanager
def serving(app, host: str = "127.0.0.1", port: int = 0, startup_s: float = 60.0,
            limits: ConnectionLimits | None = None) -> Iterator[str]:
    """Yields the base URL (http://host:port). `limits`: as `dsv4 serve`'s (default: `ConnectionLimits()`)."""
    server = uvicorn.Server(uvicorn_config(app, limits, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dsv4-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def serve_process(args: list[str], *, startup_s: float = 120.0, env: dict | None = None, stdout=None,
                  preexec_fn: Callable[[], None] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`dsv4 serve ARGS` on a free local port in a child process (output discarded unless `stdout` is given;
    `preexec_fn` runs in the child before it starts, e.g. to set its rlimits) -> (base URL, the process), once
    /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-c", "from dsv4.cli import main; raise SystemExit(main())", "serve",
            "--port", str(port), *args]
    out = stdout if stdout is not None else subprocess.DEVNULL
    server = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=out,
                              preexec_fn=preexec_fn)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dsv4 serve {' '.join(args)} did not start (exit status {server.poll()})")
            time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        server.wait(30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
