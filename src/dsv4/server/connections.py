"""The HTTP connections `dsv4 serve` accepts: how long a client may take to send a request head, and how many
connections may be open at once.

uvicorn bounds a request head's size (h11's 16 KiB) and how long a keep-alive connection may sit idle with no
bytes at all, but not how long a client may take to finish its head, nor how many connections are open: 21,000
connections that never finished their headers (slowloris) took every file descriptor, the event loop could
accept nothing more, and a legitimate `/v1/models` timed out. Here

- a connection waiting for a request head (new, or kept alive between requests) is closed once it has waited
  `head_timeout` seconds, however slowly it trickles bytes in;
- a request body must keep up a minimum pace once its head is in (`MIN_BODY_RATE`, after the same grace);
- at most `max_connections` are open (fewer where the file-descriptor limit leaves less room): a connection
  over the limit closes the one that has waited longest for its head, so a flood of idle or half-open
  connections displaces itself rather than the client that came to make a request. Only when every open
  connection is serving a request is the newcomer turned away (503, closed).

uvicorn's own `limit_concurrency` is not used: it answers 503 to every new request once that many connections
are open, half-open ones included, which is the flood keeping the legitimate client out.

The guard hooks uvicorn's h11 protocol where a request head completes (`cycle` is replaced) and where a
response completes (the connection waits for the next head).
"""

import asyncio
import json
import logging
import os
import resource
import socket
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .protocol import error_body

log = logging.getLogger("dsv4.server")

MIN_BODY_RATE = 16 * 1024  # bytes/s a request body must average after its grace (a 16 MiB body: 17 min)
_BUSY = json.dumps(error_body("the server is at its connection limit, every connection serving a request",
                              kind="server_error", code="503")).encode()
AT_CAPACITY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))  # sent unasked: no head is read
RESERVED_FDS = 64  # files the server opens while serving (logs, the engine's pipes, thread pools' wakeups)
MAX_BACKLOG = 2048  # uvicorn's default listen backlog (asyncio also accepts up to this many per wakeup)
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """`max_connections`: open connections at most; `head_timeout`: seconds a connection may take to send a
    request head; `keep_alive_timeout`: seconds an idle keep-alive connection that sends nothing is kept."""

    max_connections: int = 1024
    head_timeout: float = 10.0
    keep_alive_timeout: float = 5.0

    def __post_init__(self):
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1; got {self.max_connections}")
        if not self.head_timeout > 0 or not self.keep_alive_timeout > 0:
            raise ValueError(f"head_timeout and keep_alive_timeout must be positive; got {self.head_timeout}, "
                             f"{self.keep_alive_timeout}")


class ConnectionGuard:
    """The open connections of one server and, oldest first, those waiting for a request head (each with the
    timer that closes it)."""

    def __init__(self, max_connections: int, head_timeout: float):
        self.max_connections, self.head_timeout = max_connections, head_timeout
        self.open: set[asyncio.Protocol] = set()
        self.waiting: OrderedDict[asyncio.Protocol, asyncio.TimerHandle] = OrderedDict()
        self.shed = self.timed_out = self.refused = 0  # since the start, logged at most every LOG_EVERY_S
        self.logged_at = float("-inf")

    def admit(self, conn: "GuardedH11Protocol") -> bool:
        """A new connection: room is made by closing the longest-waiting one; False when every open
        connection is busy with a request."""
        if len(self.open) >= self.max_connections:
            if not self.waiting:
                self.refused += 1
                self._report(conn.loop.time())
                return False
            oldest = next(iter(self.waiting))
            self.shed += 1
            self.close(oldest)
            self._report(conn.loop.time())
        self.open.add(conn)
        return True

    def _report(self, now: float) -> None:
        """A line for the operator while the limit is reached (a flood, or too small a limit)."""
        if now - self.logged_at >= LOG_EVERY_S:
            self.logged_at = now
            log.warning("at the connection limit (%d): %d closed for newer ones while waiting for a request head, "
                        "%d timed out, %d turned away, since the start", self.max_connections, self.shed,
                        self.timed_out, self.refused)

    def await_head(self, conn: "GuardedH11Protocol") -> None:
        if conn not in self.waiting:
            self.waiting[conn] = conn.loop.call_later(self.head_timeout, self._expire, conn)

    def head_received(self, conn: "GuardedH11Protocol") -> None:
        timer = self.waiting.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def close(self, conn: "GuardedH11Protocol") -> None:
        """Forgets the connection and closes its transport (its `connection_lost` follows)."""
        self.head_received(conn)
        self.open.discard(conn)
        if not conn.transport.is_closing():
            conn.transport.close()

    def _expire(self, conn: "GuardedH11Protocol") -> None:
        self.waiting.pop(conn, None)
        self.timed_out += 1
        self.close(conn)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a `ConnectionGuard`, and with a pace for request bodies: once its head is in,
    a body must arrive within `head_timeout` seconds plus one for every `MIN_BODY_RATE` bytes received (a body
    trickled in a byte at a time would otherwise hold its connection, busy and never shed, for ever)."""

    def __init__(self, *args, guard: ConnectionGuard, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_start, self.body_bytes = 0.0, 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.write(AT_CAPACITY)
            transport.close()
            return
        if not self._head_buffered():
            self.guard.await_head(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track(len(data))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.close(self)
        self._pace_body(None)
        super().connection_lost(exc)

    def _head_buffered(self) -> bool:
        """Whether a whole request head already waits unread in the socket (peeked, not consumed). Under a flood
        a client's connection is accepted long after it sent its head, in a batch of up to a backlog's worth of
        connections whose bytes are read only after all of them are admitted: it must not count as half-open,
        or the flood behind it in the same batch would shed it."""
        fd = self.transport.get_extra_info("socket")
        if fd is None:
            return False
        sock = socket.socket(fileno=fd.fileno())  # asyncio's wrapper has no recv; detached below, never closed
        try:
            return b"\r\n\r\n" in sock.recv(16 * 1024, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return False
        finally:
            sock.detach()

    def _track(self, received: int) -> None:
        """Waiting for a head: no request yet, or the last one answered (a new head replaces `cycle`). Receiving
        a body: the head is in, the body is not, and no answer has started."""
        cycle = self.cycle
        if self.transport.is_closing():
            self.guard.close(self)
            self._pace_body(None)
        elif cycle is None or cycle.response_complete:
            self._pace_body(None)
            self.guard.await_head(self)
        else:
            self.guard.head_received(self)
            self._pace_body(received if cycle.more_body and not cycle.response_started else None)

    def _pace_body(self, received: int | None) -> None:
        """(Re)sets the body's deadline after `received` more bytes; None: no body is awaited."""
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        if received is None:
            self.body_start = 0.0
            return
        if not self.body_start:
            self.body_start, self.body_bytes = self.loop.time(), 0
        self.body_bytes += received
        deadline = self.body_start + self.guard.head_timeout + self.body_bytes / MIN_BODY_RATE
        self.body_timer = self.loop.call_at(deadline, self._body_too_slow)

    def _body_too_slow(self) -> None:
        self.body_timer = None
        self.guard.timed_out += 1
        self.guard.close(self)


def fd_room() -> int:
    """File descriptors this process may still open, its soft RLIMIT_NOFILE first raised to the hard limit (the
    soft one is often 1024, which a server outgrows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: assume a process's usual handful
        in_use = 32
    return soft - in_use


def uvicorn_config(app, limits: ConnectionLimits | None = None, **kwargs) -> uvicorn.Config:
    """A uvicorn config serving `app` under `limits` (default: `ConnectionLimits()`; `kwargs`: host, port,
    log_level...). The connection limit and the listen backlog are lowered to what the file-descriptor limit
    leaves: asyncio accepts up to a backlog's worth of connections before any of them can be shed, and an accept
    that finds no descriptor stops all accepting for a second."""
    limits = limits or ConnectionLimits()
    room = fd_room() - RESERVED_FDS
    if room < 32:
        raise RuntimeError(f"the file-descriptor limit leaves room for {room} connections (ulimit -n)")
    max_connections = min(limits.max_connections, room * 3 // 4)
    if max_connections < limits.max_connections:
        log.warning("max_connections lowered from %d to %d by the file-descriptor limit (ulimit -n)",
                    limits.max_connections, max_connections)
    backlog = max(16, min(MAX_BACKLOG, room - max_connections))
    guard = ConnectionGuard(max_connections, limits.head_timeout)
    # ws="none": the API has no WebSocket routes, and an upgraded connection would leave the guard's hands
    return uvicorn.Config(app, http=partial(GuardedH11Protocol, guard=guard), ws="none", backlog=backlog,
                          timeout_keep_alive=limits.keep_alive_timeout, h11_max_incomplete_event_size=16 * 1024,
                          **kwargs)
