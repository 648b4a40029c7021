"""Request and response models, one pair per operation, shared by every backend and the journal."""

import base64

from pydantic import BaseModel, ConfigDict, Field


class RunShellRequest(BaseModel):
    """Run one command in the sandbox's persistent shell session."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    cmd: str
    timeout: float = Field(30.0, gt=0)
    """Seconds until every process the command started is killed."""
    stdin: bytes | None = None
    """Bytes fed to the command's stdin (it reads /dev/null when None)."""
    max_output_bytes: int | None = Field(None, ge=1)
    """Cap per stream; None takes the sandbox's `Limits.max_output_bytes`."""


class FreshShellRequest(RunShellRequest):
    """Run one command in a fresh shell, apart from the session: it starts with exactly `env` in `cwd`, and
    neither reads nor changes the session's variables or working directory (e.g. a verifier)."""

    env: dict[str, str]
    """The command's whole environment (PATH included); nothing of the session's is added."""
    cwd: str
    """Absolute working directory of the command."""


class StopProcessesRequest(BaseModel):
    """Kill every process in the sandbox; the shell session's state stays."""

    model_config = ConfigDict(extra="forbid")


class ShellResult(BaseModel):
    """What a command did. `exit_code` is negative when a signal ended it (-9 after a timeout)."""

    model_config = ConfigDict(extra="forbid")

    exit_code: int
    stdout: str
    """Captured stdout decoded as UTF-8 (invalid bytes replaced), at most the cap."""
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    duration_s: float
    cwd: str | None = None
    """The session's working directory after the command."""

    @classmethod
    def from_agent(cls, r: dict) -> "ShellResult":
        """From the guest agent's `exec` reply (output base64-encoded)."""
        return cls(exit_code=r["exit_code"], stdout=_text(r["stdout"]), stderr=_text(r["stderr"]),
                   stdout_truncated=r["stdout_truncated"], stderr_truncated=r["stderr_truncated"],
                   timed_out=r["timed_out"], duration_s=r["duration_s"], cwd=r["cwd"])

    @property
    def truncated(self) -> bool:
        """True when either stream was cut at the cap."""
        return self.stdout_truncated or self.stderr_truncated


class ReadFileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    """Absolute, or relative to the session's working directory."""
    max_bytes: int = Field(64 << 20, ge=1)


class WriteFileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    path: str
    content: bytes
    mode: int = 0o644
    mkdirs: bool = True
    """Create missing parent directories."""


class DirEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    """"file", "dir" or "link"."""
    size: int


class FunctionCallRequest(BaseModel):
    """Call a function registered with the `function` backend."""

    model_config = ConfigDict(extra="forbid")

    name: str
    args: list = []
    kwargs: dict = {}
    timeout: float = Field(30.0, gt=0)


class FunctionResult(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    ok: bool
    value: object = None
    error: str | None = None
    """`ExceptionType: message` when the call raised, timed out or exceeded its memory limit."""
    timed_out: bool = False
    duration_s: float


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode("utf-8", errors="replace")
