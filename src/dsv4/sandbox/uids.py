"""Host uids of their own for sandboxes: each live sandbox started as root runs as a uid no other sandbox (and
no account) has, so a process that escapes one sandbox's namespaces still cannot signal, trace or read the
files of another sandbox, or of QEMU running another VM.

A uid is leased with an exclusive `flock` on a per-uid file in a root-only directory: the kernel drops the lock
when its holder exits, however it dies, so a crashed owner never strands a uid.
"""

import fcntl
import os
import stat
from pathlib import Path

from dsv4.sandbox.errors import BackendUnavailable

UID_BASE = 1_800_000_000
"""First uid of the range; above the subordinate ranges useradd hands out (100000 + 65536 per user) and below
2**31, which some tools still treat as negative."""
UID_COUNT = 65536
LEASE_DIR = Path("/run/dsv4-uids")


class UidLease:
    """One uid held for one sandbox; `release()` frees it (idempotent)."""

    def __init__(self, uid: int, fd: int | None):
        self.uid, self._fd = uid, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lease_uid(run_as_uid: int | None) -> UidLease:
    """`run_as_uid` when given; else, as root, a free uid of the range; else the caller's own uid (an
    unprivileged caller cannot switch)."""
    if run_as_uid is not None:
        return UidLease(run_as_uid, None)
    if os.geteuid() != 0:
        return UidLease(os.geteuid(), None)
    directory = _lease_dir()
    for uid in range(UID_BASE, UID_BASE + UID_COUNT):  # lowest free first: as many lock files as sandboxes at once
        fd = os.open(directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return UidLease(uid, fd)
    raise BackendUnavailable(f"all {UID_COUNT} sandbox uids from {UID_BASE} are in use")


def _lease_dir() -> Path:
    """The lease directory, made root-only (a directory others could write would let them hold every uid)."""
    LEASE_DIR.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(LEASE_DIR)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise BackendUnavailable(f"{LEASE_DIR} must be a directory owned by root and writable by root alone")
    return LEASE_DIR
