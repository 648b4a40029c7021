"""Host half of the guest-agent protocol: JSON lines over a pair of pipes, with deadlines and bounds.

The agent is inside the sandbox, so everything it sends is untrusted: a line longer than `MAX_FRAME`, a line
that is not JSON, or more data for a request than the request allows is a protocol error that breaks this
channel (and `Sandbox` then closes that sandbox); the host's memory stays bounded whatever the agent writes.
Bulk data moves in chunks both ways, each its own line:

- host -> agent: a request whose `upload` is true is followed by `{"op": "chunk", "id", "data", "end"}` lines.
- agent -> host: `{"id", "event": "data" | "output" | "part", ...}` lines before the reply; "data" chunks go to
  the request's sink as they arrive, "output" is a command's stdout/stderr, "part" a piece of a large reply
  field (a manifest, a listing, an environment) merged into the reply.
"""

import base64
import json
import os
import queue
import select
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
Sink = Callable[[bytes], None]
"""Receives a reply's data chunks in order, on the channel's reader thread."""

MAX_FRAME = 4 << 20
"""Longest line the agent may send. Its chunks are 256 KiB before base64 and its parts about 1 MiB."""
CHUNK = 256 << 10
"""Bytes of payload per chunk line, both ways."""
DEFAULT_REPLY_LIMIT = 1 << 30
"""Data, output and parts one request may receive when the request sets no limit of its own."""
READ_SIZE = 1 << 20
SEND_STALL_S = 300.0
"""A line the agent has not taken any of for this long fails its request: the agent is wedged."""


class _Pending:
    """One request in flight: its mailbox, where its data goes, and how much it may still receive."""

    def __init__(self, sink: Sink | None, limit: int, on_output: OutputCallback | None):
        self.mailbox: queue.Queue = queue.Queue()
        self.sink, self.limit, self.on_output = sink, limit, on_output
        self.data = bytearray()
        self.got_data = False
        self.output = {"stdout": bytearray(), "stderr": bytearray()}
        self.parts: dict = {}
        self.received = 0
        self.sink_error: Exception | None = None
        self.active_at = time.monotonic()

    def take(self, msg: dict, size: int) -> None:
        """Account for one line of `size` bytes (replies count too) and pass it on; on the reader thread."""
        self.received += size
        self.active_at = time.monotonic()
        if self.received > self.limit:
            raise AgentProtocolError(f"the guest agent sent more than limit={self.limit} bytes for one request")
        event = msg.get("event")
        if event is None:
            self.mailbox.put(msg)
        elif event == "data":
            self._data(base64.b64decode(msg["data"]))
        elif event == "output":
            chunk = base64.b64decode(msg["data"])
            self.output[msg["stream"]] += chunk
            if self.on_output is not None:
                self.mailbox.put((msg["stream"], chunk))
        elif event == "part":
            for key, value in msg.items():
                if key not in ("id", "event"):
                    _merge(self.parts, key, value)
        else:
            raise AgentProtocolError(f"the guest agent sent an unknown event={event!r}")

    def _data(self, chunk: bytes) -> None:
        self.got_data = True
        if self.sink is None:
            self.data += chunk
        elif self.sink_error is None:
            try:
                self.sink(chunk)
            except Exception as e:  # noqa: BLE001 - e.g. the host's disk is full: the request fails, not the channel
                self.sink_error = e

    def finish(self, reply: dict) -> dict:
        """The reply with its streamed parts folded in (and, for callers without a sink, its data as base64)."""
        for key, value in self.parts.items():
            _merge(reply, key, value)
        if self.got_data and self.sink is None:
            reply.setdefault("data", base64.b64encode(self.data).decode())
        for stream, buf in self.output.items():
            if stream not in reply and ("exit_code" in reply or buf):
                reply[stream] = base64.b64encode(buf).decode()
        return reply


def _merge(into: dict, key: str, value) -> None:
    if isinstance(value, dict):
        into.setdefault(key, {}).update(value)
    elif isinstance(value, list):
        into.setdefault(key, []).extend(value)
    else:
        into[key] = value


class Upload:
    """Bytes sent to the agent as chunk lines after their request; `close()` waits for the agent's reply."""

    def __init__(self, channel: "AgentChannel", rid: str, pending: _Pending, reply_within: float):
        self._channel, self._rid, self._pending, self._reply_within = channel, rid, pending, reply_within
        self._buf = bytearray()
        self._ended = False

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) >= CHUNK:
            self._channel._send_chunk(self._rid, memoryview(self._buf)[:CHUNK], end=False)
            del self._buf[:CHUNK]
        return len(data)

    def close(self) -> dict:
        """Send the last chunk and return the agent's reply (an error raises, as for `request`)."""
        try:
            self._ended = True
            self._channel._send_chunk(self._rid, self._buf, end=True)
            return self._channel._wait(self._pending, self._reply_within)
        finally:
            self._channel._forget(self._rid)

    def __enter__(self) -> "Upload":
        return self

    def __exit__(self, *exc) -> None:
        self._channel._forget(self._rid)  # an upload given up half-way: its reply, if any, is dropped
        if not self._ended:  # and the agent closes what it had opened for it
            try:
                self._channel._send({"op": "chunk", "id": self._rid, "data": "", "end": True, "abort": True})
            except SandboxError:
                pass


class AgentChannel:
    """Requests to the guest agent (several may be in flight), each answered into its own mailbox."""

    def __init__(self, read_fd: int, write_fd: int, describe: Callable[[], str]):
        self._read_fd, self._write_fd = read_fd, write_fd
        self._describe = describe
        self._buf = bytearray()
        self._lock = threading.Lock()
        """Guards ids, the pending requests and `_broken`; never held while blocked on a pipe."""
        self._send_lock = threading.Lock()
        """Keeps each line whole on the pipe; the reader thread never takes it, so it always drains."""
        self._next_id = 0
        self._pending: dict[str, _Pending] = {}
        self._broken: Exception | None = None
        os.set_blocking(write_fd, False)  # a send waits with a deadline: a wedged agent cannot hang the host

    @property
    def broken(self) -> Exception | None:
        """Why the channel stopped (the agent died, or broke the protocol); None while it works."""
        return self._broken

    def request(self, op: str, reply_within: float, on_output: OutputCallback | None = None, *,
                sink: Sink | None = None, limit: int | None = None, **fields) -> dict:
        """Send `op` and return the agent's reply; OSErrors inside the guest become `SandboxFileError`.

        A string `data` field (base64) is sent as chunk lines; data the agent streams back goes to `sink`, or
        into the reply's `data` (base64) without one. `reply_within` counts from the last sign of progress."""
        data = fields.pop("data", None)
        rid, pending = self._register(op, limit if limit is not None else _limit_of(fields), sink, on_output,
                                      dict(fields, upload=data is not None))
        try:
            if data is not None:
                self._send_b64_chunks(rid, data)
            return self._wait(pending, reply_within)
        finally:
            self._forget(rid)

    def upload(self, op: str, reply_within: float, **fields) -> Upload:
        """Start `op` with a payload written to the returned `Upload` (a file-like object) in chunks."""
        rid, pending = self._register(op, DEFAULT_REPLY_LIMIT, None, None, dict(fields, upload=True))
        return Upload(self, rid, pending, reply_within)

    def _register(self, op: str, limit: int, sink: Sink | None, on_output: OutputCallback | None,
                  fields: dict) -> tuple[str, _Pending]:
        pending = _Pending(sink, limit, on_output)
        with self._lock:
            if self._broken is not None:
                raise self._broken
            self._next_id += 1
            rid = str(self._next_id)
            self._pending[rid] = pending
        try:
            self._send(dict(fields, op=op, id=rid, stream=on_output is not None))
        except BaseException:
            self._forget(rid)
            raise
        return rid, pending

    def _forget(self, rid: str) -> None:
        with self._lock:
            self._pending.pop(rid, None)

    def _wait(self, pending: _Pending, reply_within: float) -> dict:
        pending.active_at = time.monotonic()  # an upload's time to send its payload does not count
        while True:
            left = pending.active_at + reply_within - time.monotonic()
            try:
                msg = pending.mailbox.get(timeout=max(0.0, min(left, 1.0)))
            except queue.Empty:
                if pending.active_at + reply_within <= time.monotonic():
                    raise CommandTimeout(f"the guest agent did not answer in time; {self._describe()}") from None
                continue
            if isinstance(msg, Exception):
                raise msg
            if isinstance(msg, tuple):
                pending.on_output(*msg)
                continue
            if not msg.get("ok"):
                raise SandboxFileError(msg.get("errno"), str(msg.get("error", "unknown guest error"))[:4000])
            if pending.sink_error is not None:
                raise pending.sink_error
            return pending.finish(msg)

    def start(self) -> None:
        """From the handshake on, route every message to the request it belongs to."""
        threading.Thread(target=self._route, name="dsv4-sandbox-channel", daemon=True).start()

    def _route(self) -> None:
        while True:
            try:
                line = self._read_line(float("inf"))
                msg = _parse(line)
                with self._lock:
                    pending = self._pending.get(str(msg.get("id")))
                if pending is None:
                    continue  # a request that timed out; its late lines are dropped
                pending.take(msg, len(line))
            except (SandboxError, OSError, ValueError, KeyError, TypeError) as e:
                self._fail(e)
                return

    def _fail(self, e: Exception) -> None:
        if not isinstance(e, SandboxError):
            e = (SandboxClosed if isinstance(e, OSError) else AgentProtocolError)(f"{type(e).__name__}: {e}")
        with self._lock:
            self._broken = e
            for pending in self._pending.values():
                pending.mailbox.put(e)

    def handshake(self, init: dict, timeout: float, wait_ready: bool = False) -> dict:
        """Send the session's initial state; the agent answers once it is ready. With `wait_ready`, first wait
        for the agent's `{"ready": true}` line, skipping whatever else the line carried before it."""
        deadline = time.monotonic() + timeout
        while wait_ready:
            try:
                wait_ready = not _parse(self._read_line(deadline)).get("ready")
            except AgentProtocolError:
                continue
        self._send(init, deadline)
        reply = _parse(self._read_line(deadline))
        self.start()
        return reply

    # ---- the wire --------------------------------------------------------------------------------
    def _send_b64_chunks(self, rid: str, data: str) -> None:
        step = CHUNK // 3 * 4  # whole base64 quanta: each slice decodes on its own
        for i in range(0, max(len(data), 1), step):
            self._send({"op": "chunk", "id": rid, "data": data[i:i + step], "end": i + step >= len(data)})

    def _send_chunk(self, rid: str, chunk, end: bool) -> None:
        self._send({"op": "chunk", "id": rid, "data": base64.b64encode(chunk).decode(), "end": end})

    def _send(self, obj: dict, deadline: float | None = None) -> None:
        """Write one line; without a `deadline`, fail once the agent has taken nothing for SEND_STALL_S."""
        data = memoryview((json.dumps(obj) + "\n").encode())
        with self._send_lock:
            while data:
                try:
                    data = data[os.write(self._write_fd, data):]
                except BlockingIOError:
                    try:
                        self._wait_fd(self._write_fd, deadline or time.monotonic() + SEND_STALL_S, write=True)
                    except CommandTimeout as e:  # maybe half a line is out: nothing more can follow it
                        self._fail(e)
                        raise
                except OSError as e:
                    raise SandboxClosed(f"the guest agent is gone ({e}); {self._describe()}") from e

    def _read_line(self, deadline: float) -> bytes:
        """The next line, without its newline; only the newly read bytes are searched, so this is linear."""
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0:
            if len(self._buf) > MAX_FRAME:
                raise AgentProtocolError(f"the guest agent sent a line longer than MAX_FRAME={MAX_FRAME} bytes; "
                                         f"{self._describe()}")
            start = len(self._buf)
            self._wait_fd(self._read_fd, deadline)
            chunk = os.read(self._read_fd, READ_SIZE)
            if not chunk:
                raise SandboxClosed(f"the guest agent closed its channel; {self._describe()}")
            self._buf += chunk
        if end > MAX_FRAME:
            raise AgentProtocolError(f"the guest agent sent a line longer than MAX_FRAME={MAX_FRAME} bytes; "
                                     f"{self._describe()}")
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        return line

    def _wait_fd(self, fd: int, deadline: float, write: bool = False) -> None:
        if deadline == float("inf"):
            return
        left = deadline - time.monotonic()
        ready = select.select([], [fd], [], max(left, 0))[1] if write else select.select([fd], [], [], max(left, 0))[0]
        if left <= 0 or not ready:
            raise CommandTimeout(f"the guest agent did not answer in time; {self._describe()}")


def _parse(line: bytes) -> dict:
    try:
        msg = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AgentProtocolError(f"the guest agent sent a non-JSON line: {line[:200]!r}") from e
    if not isinstance(msg, dict):
        raise AgentProtocolError(f"the guest agent sent a line that is not an object: {line[:200]!r}")
    return msg


def _limit_of(fields: dict) -> int:
    """What a request may receive: twice its output cap for a command (two streams), else its max_bytes."""
    if fields.get("max_output_bytes"):
        return 3 * fields["max_output_bytes"] + (1 << 20)
    if fields.get("max_bytes"):
        return 2 * fields["max_bytes"] + (1 << 20)
    return DEFAULT_REPLY_LIMIT
