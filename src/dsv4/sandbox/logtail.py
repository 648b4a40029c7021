"""A sandbox runtime's stderr kept as a bounded head and tail in host memory, never a file a guest can fill.

Whoever holds the write end can write without limit (bubblewrap's pid 1 keeps it, and a command that takes
it writes as much as it likes); the host keeps the first and the last `keep` bytes and drops the middle.
"""

import os
import threading


class LogTail:
    """`fd` is the write end to give the child as its stderr; close the parent's copy with `close_writer()`."""

    def __init__(self, keep: int = 32 << 10):
        self.keep = keep
        read_fd, self.fd = os.pipe()
        self._head, self._tail = bytearray(), bytearray()
        self.dropped = 0
        """Bytes written but kept in neither the head nor the tail."""
        self._lock = threading.Lock()
        self._drainer = threading.Thread(target=self._drain, args=(read_fd,), name="dsv4-sandbox-log", daemon=True)
        self._drainer.start()

    def _drain(self, read_fd: int) -> None:
        try:
            while data := os.read(read_fd, 1 << 16):
                with self._lock:
                    room = max(0, self.keep - len(self._head))
                    self._head += data[:room]
                    self._tail += data[room:]
                    if len(self._tail) > self.keep:
                        cut = len(self._tail) - self.keep
                        self.dropped += cut
                        del self._tail[:cut]
        finally:
            os.close(read_fd)

    def close_writer(self) -> None:
        """Close this process's copy of the write end (the child keeps its own); the log ends with the child."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def wait(self, timeout: float | None = None) -> None:
        """Until every writer has closed the pipe and all of it has been read."""
        self._drainer.join(timeout)

    def text(self) -> str:
        with self._lock:
            middle = f"\n[... {self.dropped} bytes dropped ...]\n" if self.dropped else ""
            return (bytes(self._head) + middle.encode() + bytes(self._tail)).decode(errors="replace")
