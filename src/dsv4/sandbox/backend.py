"""The small interface every backend implements, and the shared half of agent-driven backends."""

import base64
from pathlib import Path
from typing import Protocol

from dsv4.sandbox.api import (
    DirEntry,
    ReadFileRequest,
    RunShellRequest,
    ShellResult,
    WriteFileRequest,
)
from dsv4.sandbox.channel import AgentChannel, OutputCallback

# Slack on top of a command's own timeout for the agent to kill, reap and answer.
REPLY_SLACK_S = 15.0
FILE_OP_TIMEOUT_S = 60.0


class Backend(Protocol):
    """What `Sandbox` needs from a substrate (process, container, VM)."""

    workspace: Path | None
    """Host directory holding the sandbox's workspace, when the host can see it (used by snapshots)."""

    def run_shell(self, req: RunShellRequest, on_output: OutputCallback | None = None) -> ShellResult: ...
    def read_file(self, req: ReadFileRequest) -> bytes: ...
    def write_file(self, req: WriteFileRequest) -> None: ...
    def list_dir(self, path: str) -> list[DirEntry]: ...
    def pack(self, path: str) -> bytes: ...
    def unpack(self, path: str, tar: bytes) -> None: ...
    def scan(self, path: str) -> dict[str, list]: ...
    def pack_paths(self, path: str, paths: list[str]) -> bytes: ...
    def remove(self, path: str, paths: list[str]) -> None: ...
    def session(self, cwd: str | None = None, env: dict[str, str] | None = None) -> tuple[str, dict]: ...
    def is_alive(self) -> bool: ...
    def close(self) -> None: ...


class GuestBackend:
    """Implements the operations by asking the guest agent; subclasses start it and set `channel`."""

    channel: AgentChannel
    max_output_bytes: int
    workspace: Path | None = None

    def run_shell(self, req: RunShellRequest, on_output: OutputCallback | None = None) -> ShellResult:
        cap = req.max_output_bytes or self.max_output_bytes
        stdin = None if req.stdin is None else base64.b64encode(req.stdin).decode()
        r = self.channel.request("exec", req.timeout + REPLY_SLACK_S, on_output, cmd=req.cmd,
                                 timeout=req.timeout, stdin=stdin, max_output_bytes=cap)
        return ShellResult(
            exit_code=r["exit_code"], stdout=_text(r["stdout"]), stderr=_text(r["stderr"]),
            stdout_truncated=r["stdout_truncated"], stderr_truncated=r["stderr_truncated"],
            timed_out=r["timed_out"], duration_s=r["duration_s"], cwd=r["cwd"],
        )

    def read_file(self, req: ReadFileRequest) -> bytes:
        r = self.channel.request("read", FILE_OP_TIMEOUT_S, path=req.path, max_bytes=req.max_bytes)
        return base64.b64decode(r["data"])

    def write_file(self, req: WriteFileRequest) -> None:
        self.channel.request("write", FILE_OP_TIMEOUT_S, path=req.path, mode=req.mode, mkdirs=req.mkdirs,
                             data=base64.b64encode(req.content).decode())

    def list_dir(self, path: str) -> list[DirEntry]:
        r = self.channel.request("list", FILE_OP_TIMEOUT_S, path=path)
        return [DirEntry(**e) for e in r["entries"]]

    def pack(self, path: str) -> bytes:
        return base64.b64decode(self.channel.request("tar", FILE_OP_TIMEOUT_S, path=path)["data"])

    def unpack(self, path: str, tar: bytes) -> None:
        self.channel.request("untar", FILE_OP_TIMEOUT_S, path=path, data=base64.b64encode(tar).decode())

    def scan(self, path: str) -> dict[str, list]:
        return self.channel.request("scan", FILE_OP_TIMEOUT_S, path=path)["manifest"]

    def pack_paths(self, path: str, paths: list[str]) -> bytes:
        r = self.channel.request("pack", FILE_OP_TIMEOUT_S, path=path, paths=paths)
        return base64.b64decode(r["data"])

    def remove(self, path: str, paths: list[str]) -> None:
        self.channel.request("remove", FILE_OP_TIMEOUT_S, path=path, paths=paths)

    def session(self, cwd: str | None = None, env: dict[str, str] | None = None) -> tuple[str, dict]:
        """The shell session's (cwd, exported env), after setting whichever is given."""
        r = self.channel.request("session", FILE_OP_TIMEOUT_S, cwd=cwd, env=env)
        return r["cwd"], r["env"]


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode("utf-8", errors="replace")
