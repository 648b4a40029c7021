"""Typed configuration: one config per backend (discriminated by `type`) and the sandbox spec."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dsv4.sandbox.limits import Limits
from dsv4.sandbox.network import NetworkRules

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc")
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")


class ProcessConfig(BaseModel):
    """bubblewrap over the host's own system directories, mounted read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["process"] = "process"
    python: str = "/usr/bin/python3"
    """Interpreter (inside the sandbox) that runs the guest agent."""
    system_dirs: tuple[str, ...] = SYSTEM_DIRS
    """Host paths bound read-only at the same place (symlinks are recreated as symlinks)."""
    masked_files: tuple[str, ...] = MASKED_FILES
    """Host files replaced by an empty file even though their directory is bound."""
    run_as_uid: int | None = None
    """Host uid the sandbox runs as; None = a uid of its own (`dsv4.sandbox.uids`, leased while it lives) when
    started as root, else the caller's uid."""
    seccomp: bool = True
    """Install the syscall filter of `dsv4.sandbox.seccomp`."""
    state_dir: Path | None = None
    """Where per-sandbox host directories go; None = the system temp directory."""
    start_timeout_s: float = 20.0


class ContainerConfig(ProcessConfig):
    """An OCI image rootfs (a directory or an image tarball) under bubblewrap or gVisor `runsc`."""

    type: Literal["container"] = "container"
    image: Path | None = None
    """A rootfs directory, an OCI image layout directory, or a tarball of either; `rootfs=` fills it."""
    runtime: Literal["bwrap", "runsc"] = "bwrap"
    writable: bool = False
    """Commands run as root of the sandbox's user namespace (the sandbox's own host uid outside) over a private
    writable overlay of the image, discarded on close, and the workspace is the image's own `workdir` (what the
    image holds there stays); False: the image read-only, uid 1000, a fresh workspace. Needs root on the host
    (the overlay is mounted there) and the bwrap runtime; writes count against the workspace quota."""
    system_dirs: tuple[str, ...] = ()
    masked_files: tuple[str, ...] = ()


class VMConfig(BaseModel):
    """QEMU booting a kernel and an initramfs that starts the guest agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["vm"] = "vm"
    python: str = "/usr/bin/python3"
    """Host interpreter run (through the host's loader, over 9p) as the guest agent."""
    run_as_uid: int | None = None
    """Host uid QEMU runs as; None = a uid of its own (`dsv4.sandbox.uids`, leased while it lives) when started
    as root, else the caller's uid."""
    kernel: Path | None = None
    """None = the newest /boot/vmlinuz-*."""
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    boot_timeout_s: float = 120.0
    state_dir: Path | None = None


class FunctionConfig(BaseModel):
    """Registered Python callables run in a pool of worker processes (DSec's FnCall tier)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["function"] = "function"
    workers: int = Field(2, ge=1)


BackendConfig = Annotated[
    ProcessConfig | ContainerConfig | VMConfig | FunctionConfig, Field(discriminator="type")
]


class SandboxSpec(BaseModel):
    """Everything `Sandbox.create` was asked for; recorded at the head of a journal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendConfig
    limits: Limits = Limits()
    network_rules: NetworkRules = NetworkRules()
    workdir: str = "/workspace"
    """Absolute path of the private writable workspace inside the sandbox."""
    scratch_dirs: tuple[str, ...] = ()
    """More private writable directories, empty at start (tmpfs of `limits.tmpfs_mb` each), at absolute paths the
    read-only system does not provide, e.g. Harbor tasks' /tests and /logs; not part of snapshots."""
    env: dict[str, str] = {}
    """Extra environment variables of the shell session."""
    ttl_running_stop: float | None = Field(None, gt=0)
    """Idle seconds after which the sandbox is closed by its reaper; None = never."""

    @model_validator(mode="after")
    def _scratch(self):
        for d in self.scratch_dirs:
            if not d.startswith("/") or d.rstrip("/") in ("", "/proc", "/dev", "/tmp", "/run") or ".." in d.split("/"):
                raise ValueError(f"scratch_dirs: {d!r} must be an absolute path outside /, /proc, /dev, /tmp, /run")
            if d.rstrip("/") == self.workdir.rstrip("/") or d.startswith(self.workdir.rstrip("/") + "/") or \
                    self.workdir.startswith(d.rstrip("/") + "/"):
                raise ValueError(f"scratch_dirs: {d!r} overlaps the workdir {self.workdir!r}")
        return self
