"""The HTTP connections `dsv4 serve` accepts: how long a client may take to send a request head, and how many
connections may be open at once.

uvicorn bounds a request head's size (h11's 16 KiB) and how long a keep-alive connection may sit idle with no
bytes at all, but not how long a client may take to finish its head, nor how many connections are open: 21,000
connections that never finished their headers (slowloris) took every file descriptor, the event loop could
accept nothing more, and a legitimate `/v1/models` timed out. Here

- a connection waiting for a request head (new, or kept alive between requests) is closed once it has waited
  `head_timeout` seconds, however slowly it trickles bytes in;
- at most `max_connections` are open (fewer where the file-descriptor limit leaves less room): a connection
  over the limit closes the one that has waited longest for its head, so a flood of idle or half-open
  connections displaces itself rather than the client that came to make a request. Only when every open
  connection is serving a request is the newcomer closed (the server is at capacity).

The guard hooks uvicorn's h11 protocol where a request head completes (`cycle` is replaced) and where a
response completes (the connection waits for the next head).
"""

import asyncio
import logging
import os
import resource
import socket
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("dsv4.server")

RESERVED_FDS = 64  # files the server opens while serving (logs, the engine's pipes, thread pools' wakeups)
MAX_BACKLOG = 2048  # uvicorn's default listen backlog (asyncio also accepts up to this many per wakeup)


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
        self.shed = self.timed_out = self.refused = 0  # counters, for logs and tests

    def admit(self, conn: "GuardedH11Protocol") -> bool:
        """A new connection: room is made by closing the longest-waiting one; False when every open
        connection is busy with a request."""
        if len(self.open) >= self.max_connections:
            if not self.waiting:
                self.refused += 1
                return False
            oldest = next(iter(self.waiting))
            self.shed += 1
            self.close(oldest)
        self.open.add(conn)
        return True

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
    """uvicorn's h11 protocol under a `ConnectionGuard`."""

    def __init__(self, *args, guard: ConnectionGuard, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard = guard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            log.warning("connection refused: all %d connections are serving requests", self.guard.max_connections)
            transport.close()
            return
        if not self._head_buffered():
            self.guard.await_head(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.close(self)
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

    def _track(self) -> None:
        """Waiting for a head: no request yet, or the last one answered (a new head replaces `cycle`)."""
        if self.transport.is_closing():
            self.guard.close(self)
        elif self.cycle is None or self.cycle.response_complete:
            self.guard.await_head(self)
        else:
            self.guard.head_received(self)


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
    log_level...). The connection limit
    and the listen backlog are lowered to what the file-descriptor limit leaves: asyncio accepts up to a
    backlog's worth of connections before any of them can be shed, and an accept that finds no descriptor
    stops all accepting for a second."""
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
    return uvicorn.Config(app, http=partial(GuardedH11Protocol, guard=guard), backlog=backlog,
                          timeout_keep_alive=limits.keep_alive_timeout, h11_max_incomplete_event_size=16 * 1024,
                          **kwargs)
