"""Per-sandbox resource limits and how they become rlimits and a CPU set inside the guest."""

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_WORKSPACE_MB = 1024


class Limits(BaseModel):
    """What one sandbox may use; every command it runs gets these as hard limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_limit_mb: int = Field(1024, ge=16)
    """Address-space cap of each process (RLIMIT_AS), in MiB."""
    cpu_cores_limit: float = Field(1.0, gt=0)
    """CPUs the sandbox may run on (rounded up to whole cores, pinned by affinity)."""
    pids_limit: int = Field(128, ge=8)
    """Most processes the sandbox's user may have at once (RLIMIT_NPROC, counted per user namespace)."""
    file_size_limit_mb: int = Field(1024, ge=1)
    """Largest file a command may write (RLIMIT_FSIZE), in MiB."""
    open_files_limit: int = Field(1024, ge=16)
    """Most open file descriptors per process (RLIMIT_NOFILE)."""
    max_output_bytes: int = Field(1 << 20, ge=1)
    """Default cap on captured stdout and on stderr per command; the rest is dropped and flagged."""
    tmpfs_mb: int = Field(256, ge=1)
    """Size of the sandbox's private /tmp, and of its /dev/shm, in MiB each."""
    workspace_mb: int = Field(DEFAULT_WORKSPACE_MB, ge=1)
    """Quota of the workspace in MiB (None is taken as the default, 1024). As root, an ext4 image of this size
    loop-mounted on the host (`dsv4.sandbox.workspace`); otherwise a private tmpfs of this size."""
    workspace_inodes: int | None = Field(None, ge=16)
    """Most files and directories in the workspace; None = one per 16 KiB of the quota (65536 for 1024 MiB).
    Enforced by the ext4 image and by the vm backend's tmpfs; a bubblewrap tmpfs (not root) has no inode cap."""

    @field_validator("workspace_mb", mode="before")
    @classmethod
    def _default_quota(cls, v):
        return DEFAULT_WORKSPACE_MB if v is None else v  # `Sandbox.create(workspace_mb=None)`, older journals

    @property
    def inodes(self) -> int:
        """The workspace's inode cap."""
        return self.workspace_inodes or self.workspace_mb * 64

    def cpu_set(self) -> list[int]:
        """The first `ceil(cpu_cores_limit)` CPUs this process may use."""
        allowed = sorted(os.sched_getaffinity(0))
        n = max(1, min(len(allowed), -int(-self.cpu_cores_limit // 1)))
        return allowed[:n]

    def guest(self) -> dict:
        """The limits as the guest agent applies them (bytes and counts)."""
        return {
            "pids": self.pids_limit,
            "memory_bytes": self.memory_limit_mb << 20,
            "file_size_bytes": self.file_size_limit_mb << 20,
            "open_files": self.open_files_limit,
        }
