"""Per-sandbox network rules, and the host half of the allow-list relay.

Loopback IP destinations are relayed transparently: the sandbox connects to the same address and port on its
own loopback. Any other destination (a hostname or a non-loopback IP) is reachable through an HTTP proxy at
`127.0.0.1:3128` inside the sandbox (`HTTP(S)_PROXY` are set) that tunnels only to the listed host:port pairs
and answers 403 to everything else at once.

A name is resolved once, on the host, and the proxy connects to an address it vetted (never re-resolving, so a
rebinding name cannot switch addresses in between): only public addresses qualify. Loopback, private,
link-local (cloud metadata at 169.254.169.254 included), shared, reserved and unspecified addresses are
reached only when allowed as an IP literal, or, for loopback, by the name `localhost` itself.
"""

import ipaddress
import os
import re
import socket
import threading
from functools import partial
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dsv4.sandbox.guest.forward import splice

HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")
PROXY = ("127.0.0.1", 3128)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


class HostPort(BaseModel):
    """One allowed destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    """An IP address or a host name (names, `localhost` included, are resolved by the proxy on the host)."""
    port: int = Field(ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            pass
        if not HOSTNAME.fullmatch(v):
            raise ValueError(f"host={v!r} is neither an IP address nor a host name")
        return v.lower()

    @property
    def transparent(self) -> bool:
        """Loopback IPs are relayed at the same address; everything else goes through the proxy."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @classmethod
    def parse(cls, text: str) -> "HostPort":
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{text!r} has no :port")
        return cls(host=host.strip("[]"), port=int(port))


class NetworkRules(BaseModel):
    """`none`: no IP sockets at all; `loopback`: a private loopback only; `allow`: that plus a relay to each
    listed host:port; `all`: a private loopback plus the proxy to any public host:port. Anything else fails
    fast (no route, refused, 403, or EACCES)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["none", "loopback", "allow", "all"] = "none"
    """`all`: the proxy tunnels to any host:port whose address is public (never to loopback, private or
    link-local addresses); bubblewrap backends only."""
    allow: tuple[HostPort, ...] = ()
    """Destinations reachable in `allow` mode."""

    @model_validator(mode="after")
    def _allow_needs_mode(self) -> "NetworkRules":
        if self.mode != "allow" and self.allow:
            raise ValueError(f"network_rules.allow is only used with mode='allow', got mode={self.mode!r}")
        return self

    @classmethod
    def of(cls, rules: "NetworkRules | str | list[str] | None") -> "NetworkRules":
        """Accept `None`, `"none"`, `"loopback"`, `"all"`, a list of `"host:port"` or the same joined by commas
        (as the CLI's `--network` takes it), or `NetworkRules`."""
        if rules is None:
            return cls()
        if isinstance(rules, NetworkRules):
            return rules
        if isinstance(rules, str):
            if rules in ("none", "loopback", "all"):
                return cls(mode=rules)
            rules = [r for r in rules.split(",") if r.strip()]
        allow = []
        for r in rules:
            try:
                allow.append(HostPort.parse(r.strip()))
            except ValueError as e:
                raise ValueError(f"network rule {r!r}: expected none, loopback, all, or host:port,... ({e})") from None
        return cls(mode="allow", allow=tuple(allow))


class Relay:
    """Host side of the allow-list: a unix socket per transparent destination, one for the proxy."""

    def __init__(self, rules: NetworkRules, directory: Path):
        self.directory = directory
        self.sockets: dict[tuple[str, int], tuple[Path, socket.socket]] = {}
        """(address the guest listens on, port) -> (host unix socket, its listener), one per relay."""
        self._made = 0
        self.proxied: set[tuple[str, int]] = set()
        directory.mkdir(mode=0o755, exist_ok=True)
        self.update(rules)

    def update(self, rules: NetworkRules) -> tuple[list[tuple[str, int, Path]], list[tuple[str, int]]]:
        """Switch to `rules`: (relays the guest must start forwarding, relays it must stop)."""
        self.proxied = {(d.host, d.port) for d in rules.allow if not d.transparent}
        self.any_public = rules.mode == "all"
        wanted = {(d.host, d.port): partial(_tunnel, addresses=literal_address(d.host, d.port))
                  for d in rules.allow if d.transparent}
        if self.proxied or self.any_public:
            wanted[PROXY] = self._proxy
        removed = [key for key in self.sockets if key not in wanted]
        for key in removed:
            self._close(self.sockets.pop(key)[1])
        added = [key for key in wanted if key not in self.sockets]
        for key in added:
            self._made += 1
            self._listen(self.directory / f"{self._made}.sock", key, wanted[key])
        return [(*key, self.sockets[key][0]) for key in added], removed

    def proxy_env(self) -> dict[str, str]:
        """Environment that points HTTP clients in the sandbox at the filtering proxy."""
        if not (self.proxied or self.any_public):
            return {}
        url = f"http://{PROXY[0]}:{PROXY[1]}"
        return {k: url for k in PROXY_VARS}

    def _listen(self, path: Path, guest_addr: tuple[str, int], handle) -> None:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        os.chmod(path, 0o777)
        listener.listen(64)
        self.sockets[guest_addr] = (path, listener)
        threading.Thread(target=_accept, args=(listener, handle), daemon=True).start()

    def _proxy(self, conn: socket.socket) -> None:
        """One proxied connection: CONNECT host:port, or a request in absolute form; 403 unless allowed."""
        try:
            head = _read_head(conn)
            line, _, rest = head.partition(b"\r\n")
            method, target, version = line.decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                preface, reply = b"", b"HTTP/1.1 200 Connection established\r\n\r\n"
            else:
                url = urlsplit(target)
                host, port = url.hostname or "", url.port or 80
                origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
                preface, reply = f"{method} {origin} {version}\r\n".encode() + rest, b""
            dest = HostPort(host=host.strip("[]"), port=int(port))
        except (OSError, ValueError):
            conn.close()
            return
        listed = (dest.host, dest.port) in self.proxied
        if not (listed or self.any_public):
            return _refuse(conn)
        addresses = vetted_addresses(dest.host, dest.port, listed)
        if not addresses:
            return _refuse(conn, f"{dest.host} resolves to no address the sandbox may reach (only public ones, "
                                 "unless allowed as an IP)")
        _tunnel(conn, addresses, preface=preface, reply=reply)

    def close(self) -> None:
        for _, listener in self.sockets.values():
            self._close(listener)
        self.sockets = {}

    @staticmethod
    def _close(listener: socket.socket) -> None:
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()


def _accept(listener: socket.socket, handle) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def literal_address(host: str, port: int) -> list[tuple[int, tuple]]:
    """[(family, sockaddr)] of an IP literal."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    return [(family, (host, port))]


def vetted_addresses(host: str, port: int, listed: bool) -> list[tuple[int, tuple]]:
    """Where the proxy may connect for `host:port`: a listed IP literal as it is (allowed by address), a listed
    `localhost` on loopback only, anything else on its public addresses only (never loopback, private,
    link-local / metadata, shared, reserved or unspecified ones)."""
    try:
        infos = literal_address(host, port)
        if listed:
            return infos
    except ValueError:  # a name
        try:
            infos = [(i[0], i[4]) for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        except (OSError, UnicodeError):
            return []
    local = listed and (host == "localhost" or host.endswith(".localhost"))
    vetted = []
    for family, sockaddr in infos:
        ip = _unmapped(sockaddr[0])
        if ip.is_loopback if local else ip.is_global:
            vetted.append((family, sockaddr))
    return vetted


def _unmapped(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address, IPv4-mapped IPv6 (::ffff:a.b.c.d) taken as the IPv4 address it carries."""
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def _refuse(conn: socket.socket, why: str = "") -> None:
    body = why.encode()
    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    conn.close()


def _tunnel(conn: socket.socket, addresses: list[tuple[int, tuple]], preface: bytes = b"", reply: bytes = b"") -> None:
    """Connect to the first of `addresses` that answers (each already vetted), then splice."""
    for family, sockaddr in addresses:
        up = socket.socket(family, socket.SOCK_STREAM)
        try:
            up.settimeout(10)
            up.connect(sockaddr)
            up.settimeout(None)
            up.sendall(preface)
            conn.sendall(reply)
        except OSError:
            up.close()
            continue
        return splice(conn, up)
    conn.close()


def _read_head(conn: socket.socket, limit: int = 16384) -> bytes:
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk or len(data) > limit:
            raise ValueError("no complete request head")
        data += chunk
    conn.settimeout(None)
    return data
