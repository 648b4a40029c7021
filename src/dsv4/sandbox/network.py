"""Per-sandbox network rules, and the host half of the allow-list relay."""

import ipaddress
import os
import socket
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dsv4.sandbox.agent import pump


class HostPort(BaseModel):
    """One allowed destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    """A loopback IP address (127.0.0.0/8 or ::1); the sandbox reaches it at the same address and port."""
    port: int = Field(ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, v: str) -> str:
        if v == "localhost":
            return "127.0.0.1"
        try:
            ip = ipaddress.ip_address(v)
        except ValueError as e:
            raise ValueError(f"host={v!r} is not an IP address") from e
        if not ip.is_loopback:
            raise ValueError(f"host={v!r}: only loopback destinations can be relayed into a sandbox")
        return str(ip)

    @classmethod
    def parse(cls, text: str) -> "HostPort":
        host, _, port = text.rpartition(":")
        return cls(host=host.strip("[]"), port=int(port))


class NetworkRules(BaseModel):
    """`none`: no IP sockets at all; `loopback`: a private loopback only; `allow`: that plus a relay to each
    listed host:port. Anything else fails fast (no route, refused, or EACCES)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["none", "loopback", "allow"] = "none"
    allow: tuple[HostPort, ...] = ()
    """Destinations reachable in `allow` mode."""

    @model_validator(mode="after")
    def _allow_needs_mode(self) -> "NetworkRules":
        if self.mode != "allow" and self.allow:
            raise ValueError(f"network_rules.allow is only used with mode='allow', got mode={self.mode!r}")
        return self

    @classmethod
    def of(cls, rules: "NetworkRules | str | list[str] | None") -> "NetworkRules":
        """Accept `None`, `"none"`, `"loopback"`, a list of `"host:port"`, or `NetworkRules`."""
        if rules is None:
            return cls()
        if isinstance(rules, NetworkRules):
            return rules
        if isinstance(rules, str):
            return cls(mode=rules)
        return cls(mode="allow", allow=tuple(HostPort.parse(r) for r in rules))


class Relay:
    """Host side of the allow-list: one unix socket per destination, each connection piped to host:port."""

    def __init__(self, rules: NetworkRules, directory: Path, uid: int | None):
        self.sockets: list[tuple[HostPort, Path]] = []
        self._listeners: list[socket.socket] = []
        directory.mkdir(mode=0o755, exist_ok=True)
        for i, dest in enumerate(rules.allow):
            path = directory / f"{i}.sock"
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(str(path))
            os.chmod(path, 0o777)
            listener.listen(64)
            self._listeners.append(listener)
            self.sockets.append((dest, path))
            threading.Thread(target=self._accept, args=(listener, dest), daemon=True).start()

    def _accept(self, listener: socket.socket, dest: HostPort) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection((dest.host, dest.port), timeout=5)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        for listener in self._listeners:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()

