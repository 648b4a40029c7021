"""Host half of the guest-agent protocol: JSON lines over a pair of pipes, with deadlines."""

import base64
import json
import os
import queue
import selectors
import threading
import time
from collections.abc import Callable

from dsv4.sandbox.errors import (
    AgentProtocolError,
    CommandTimeout,
    SandboxClosed,
    SandboxError,
    SandboxFileError,
)

OutputCallback = Callable[[str, bytes], None]
"""Receives `(stream, chunk)` while a command runs; stream is "stdout" or "stderr"."""


class AgentChannel:
    """Sends one request at a time to the guest agent and waits for its reply."""

    def __init__(self, read_fd: int, write_fd: int, describe: Callable[[], str]):
        self._read_fd, self._write_fd = read_fd, write_fd
        self._describe = describe
        self._buf = b""
        self._lock = threading.Lock()
        """Guards writes, ids and the mailboxes; requests run concurrently, each waits on its mailbox."""
        self._next_id = 0
        self._mailboxes: dict[str, queue.Queue] = {}
        self._broken: Exception | None = None

    def request(self, op: str, reply_within: float, on_output: OutputCallback | None = None,
                **fields) -> dict:
        """Send `op` and return the agent's reply; OSErrors inside the guest become `SandboxFileError`."""
        mailbox: queue.Queue = queue.Queue()
        with self._lock:
            if self._broken is not None:
                raise self._broken
            self._next_id += 1
            rid = str(self._next_id)
            self._mailboxes[rid] = mailbox
            self._send(dict(fields, op=op, id=rid, stream=on_output is not None))
        try:
            return self._wait(mailbox, time.monotonic() + reply_within, on_output)
        finally:
            with self._lock:
                self._mailboxes.pop(rid, None)

    def _wait(self, mailbox: queue.Queue, deadline: float, on_output: OutputCallback | None) -> dict:
        while True:
            try:
                msg = mailbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise CommandTimeout(f"the guest agent did not answer in time; {self._describe()}") from None
            if isinstance(msg, Exception):
                raise msg
            if msg.get("event") == "output":
                if on_output is not None:
                    on_output(msg["stream"], base64.b64decode(msg["data"]))
                continue
            if not msg.get("ok"):
                raise SandboxFileError(msg.get("errno"), msg.get("error", "unknown guest error"))
            return msg

    def start(self) -> None:
        """From the handshake on, route every message to the mailbox of the request it answers."""
        threading.Thread(target=self._route, name="dsv4-sandbox-channel", daemon=True).start()

    def _route(self) -> None:
        while True:
            try:
                msg = self._read_message(float("inf"))
            except (SandboxError, OSError) as e:
                with self._lock:
                    self._broken = e if isinstance(e, SandboxError) else SandboxClosed(str(e))
                    for mailbox in self._mailboxes.values():
                        mailbox.put(self._broken)
                return
            with self._lock:
                mailbox = self._mailboxes.get(str(msg.get("id")))
            if mailbox is not None:
                mailbox.put(msg)

    def handshake(self, init: dict, timeout: float, wait_ready: bool = False) -> dict:
        """Send the session's initial state; the agent answers once it is ready. With `wait_ready`, first wait
        for the agent's `{"ready": true}` line, skipping whatever else the line carried before it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while wait_ready:
                try:
                    wait_ready = not self._read_message(deadline).get("ready")
                except AgentProtocolError:
                    continue
            self._send(init)
            reply = self._read_message(deadline)
        self.start()
        return reply

    def _send(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        try:
            while data:
                data = data[os.write(self._write_fd, data):]
        except (BrokenPipeError, OSError) as e:
            raise SandboxClosed(f"the guest agent is gone ({e}); {self._describe()}") from e

    def _read_message(self, deadline: float) -> dict:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            with selectors.DefaultSelector() as sel:
                sel.register(self._read_fd, selectors.EVENT_READ)
                if left <= 0 or not sel.select(None if left == float("inf") else left):
                    raise CommandTimeout(f"the guest agent did not answer in time; {self._describe()}")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise SandboxClosed(f"the guest agent closed its channel; {self._describe()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            raise AgentProtocolError(f"the guest agent sent a non-JSON line: {line[:200]!r}") from e
