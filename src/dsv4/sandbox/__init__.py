"""DSec-style sandboxes: function calls, bubblewrap processes, containers and VMs behind one API.

    sb = Sandbox.create("process", memory_limit_mb=512, pids_limit=64, network_rules="none")
    r = sb.run_shell("make test", timeout=60)      # r.exit_code, r.stdout, r.truncated, r.duration_s
    sb.close()

Backends (`BackendUnavailable` says why one cannot run on a machine):
- `function`: registered callables in a warm pool of forked workers (timeouts, RLIMIT_AS).
- `process`: the guest agent under bubblewrap: user/pid/net/ipc/uts/cgroup namespaces, host system dirs
  read-only, private workspace and /tmp, seccomp filter, rlimits (+ cgroup v1 memory/pids where writable).
- `container`: an image rootfs (directory, OCI layout or `docker save` tarball) under bubblewrap or runsc.
- `vm`: QEMU (KVM when usable, else TCG) booting the host kernel with a generated initramfs.

Every operation can be journaled (`journal=`) and replayed by `Sandbox.resume`; `snapshot()` returns an
incremental workspace snapshot that `Sandbox.restore` starts a new sandbox from. Imports only the standard
library and pydantic (plus system tools at run time), never model code.
"""

from dsv4.sandbox.aio import AsyncSandbox
from dsv4.sandbox.api import DirEntry, FunctionResult, ShellResult
from dsv4.sandbox.config import ContainerConfig, FunctionConfig, ProcessConfig, SandboxSpec, VMConfig
from dsv4.sandbox.errors import (
    BackendUnavailable,
    CommandTimeout,
    JournalMismatch,
    SandboxClosed,
    SandboxError,
    SandboxFileError,
    UnknownBackend,
    UnsupportedOperation,
)
from dsv4.sandbox.limits import Limits
from dsv4.sandbox.network import NetworkRules
from dsv4.sandbox.sandbox import Sandbox
from dsv4.sandbox.snapshot import Snapshot

__all__ = [
    "AsyncSandbox", "BackendUnavailable", "CommandTimeout", "ContainerConfig", "DirEntry", "FunctionConfig",
    "FunctionResult", "JournalMismatch", "Limits", "NetworkRules", "ProcessConfig", "Sandbox",
    "SandboxClosed",
    "SandboxError", "SandboxFileError", "SandboxSpec", "ShellResult", "Snapshot", "UnknownBackend",
    "UnsupportedOperation", "VMConfig",
]
