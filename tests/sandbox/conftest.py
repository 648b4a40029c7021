import socket
import subprocess
import threading

import pytest

from dsv4.sandbox import BackendUnavailable, Sandbox


def uses_bwrap(backend) -> bool:
    name = backend if isinstance(backend, str) else backend.type
    runtime = getattr(backend, "runtime", "bwrap")
    return name == "process" or (name == "container" and runtime == "bwrap")


def bare_bwrap_works() -> bool:
    """The reference invocation from the spec: if this runs, every bubblewrap backend must too."""
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--unshare-all", "--die-with-parent", "true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def make_sandbox():
    """Sandboxes closed after the test; skips (with the backend's reason) where one is unavailable."""
    made: list[Sandbox] = []

    def make(backend="process", **kwargs) -> Sandbox:
        try:
            sb = Sandbox.create(backend, **kwargs)
        except BackendUnavailable as e:
            if uses_bwrap(backend) and bare_bwrap_works():
                raise  # bubblewrap itself runs here, so this is our bug, not the machine's
            pytest.skip(f"backend {backend!r} unavailable: {e}")
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.close()


@pytest.fixture
def sb(make_sandbox) -> Sandbox:
    return make_sandbox("process")


class LoopbackServer:
    """A host TCP server on 127.0.0.1 that answers b"pong" and counts the connections it accepted."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"pong")
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def loopback_server():
    server = LoopbackServer()
    yield server
    server.close()
