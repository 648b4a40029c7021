"""Per-sandbox resource limits and how they become rlimits and a CPU set inside the guest."""

import os

from pydantic import BaseModel, ConfigDict, Field


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
    workspace_mb: int | None = Field(None, ge=1)
    """When set, the workspace is a private tmpfs of this size (no host directory, nothing to fill the host
    disk with); when None it is a host directory (bubblewrap backends) without a quota."""

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
