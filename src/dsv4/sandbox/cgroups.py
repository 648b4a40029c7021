"""Per-sandbox cgroups (v1 memory and pids hierarchies): one cap on the memory and on the processes of a
whole sandbox, where rlimits only cap each process.

The thread that starts the sandbox moves itself into the cgroups first (cgroup v1 places threads), so bwrap
and everything it forks are born inside. Without a writable v1 hierarchy (not root, or cgroup v2 only),
`SandboxCgroup.create` returns None with the reason, and the rlimits remain the only bound.
"""

import os
import threading
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def v1_dir(controller: str) -> Path | None:
    """This process's directory in the v1 hierarchy of `controller`, if mounted and writable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            d = ROOT / controller / path.lstrip("/")
            return d if os.access(d, os.W_OK) else None
    return None


class SandboxCgroup:
    """The sandbox's memory and pids cgroups."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs

    @classmethod
    def create(cls, memory_bytes: int, pids: int) -> "tuple[SandboxCgroup | None, str]":
        """(cgroup, how limits are enforced) — the cgroup is None when v1 cgroups cannot be used here."""
        parents = {c: v1_dir(c) for c in ("memory", "pids")}
        missing = [c for c, d in parents.items() if d is None]
        if missing:
            return None, f"rlimits only: no writable cgroup v1 hierarchy for {', '.join(missing)}"
        name = f"dsv4-sandbox-{uuid.uuid4().hex[:12]}"
        made = cls([parents["memory"] / name, parents["pids"] / name])
        try:
            for d in made.dirs:
                d.mkdir()
            made._write(0, "memory.limit_in_bytes", memory_bytes)
            if (made.dirs[0] / "memory.memsw.limit_in_bytes").exists():
                made._write(0, "memory.memsw.limit_in_bytes", memory_bytes)  # no escape into swap
            made._write(1, "pids.max", pids)
        except OSError as e:
            made.remove()
            return None, f"rlimits only: cgroup setup failed ({e})"
        return made, "cgroup v1 memory+pids, plus rlimits"

    def _write(self, i: int, name: str, value: int) -> None:
        (self.dirs[i] / name).write_text(str(value))

    def enter_current_thread(self) -> None:
        """Move the calling thread (not its process) into the cgroups; its children are born there."""
        for d in self.dirs:
            (d / "tasks").write_text(str(_gettid()))

    def leave_current_thread(self) -> None:
        """Move the calling thread back to its parents' cgroups (so the cgroups can be removed later)."""
        for d in self.dirs:
            (d.parent / "tasks").write_text(str(_gettid()))

    def peak_memory_bytes(self) -> int:
        return int((self.dirs[0] / "memory.max_usage_in_bytes").read_text())

    def remove(self) -> None:
        """rmdir both cgroups, waiting briefly for the last killed tasks to be reaped."""
        deadline = time.monotonic() + 5
        for d in self.dirs:
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)


def _gettid() -> int:
    return threading.get_native_id()
