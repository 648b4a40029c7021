"""Host-side extraction of untrusted tarballs (images, downloads), the same on every Python 3.11.x.

tarfile's extraction filters only exist from 3.11.4 (Debian 12 ships 3.11.2), so the vetting is done here:
no member lands outside the destination or writes through a link that leaves it, device nodes and FIFOs are
skipped, setuid/setgid bits and foreign ownership are dropped, and unless `links_may_leave`, symbolic links
that resolve outside the destination, through the links around them, are not created (an image's
`/bin/sh -> /bin/busybox` is kept as a link).
"""

import copy
import os
import tarfile
from pathlib import Path


def extract(tar: tarfile.TarFile, dest: Path, *, links_may_leave: bool,
            members: list[tarfile.TarInfo] | None = None) -> None:
    root = os.path.realpath(dest)
    members = tar.getmembers() if members is None else members
    # Links that must stay inside are created last, so nothing is written through them, and each is checked
    # where it really points (through the links made before it), not by its text: `d -> .` makes
    # `d/d/../..` leave. A later link can redirect an earlier one, so all are checked again until none moves.
    later = [m for m in members if m.issym() and not links_may_leave]
    for m in members if links_may_leave else [m for m in members if not m.issym()]:
        _extract_one(tar, m, root, links_may_leave)
    made = [p for m in later if (p := _extract_one(tar, m, root, links_may_leave)) is not None]
    while escaping := [p for p in made if os.path.islink(p) and not inside(root, os.path.realpath(p))]:
        for p in escaping:
            os.unlink(p)
        made = [p for p in made if p not in escaping]


def _extract_one(tar: tarfile.TarFile, m: tarfile.TarInfo, root: str, links_may_leave: bool) -> str | None:
    """The host path a member was extracted to, or None when it was refused."""
    safe = vetted(m, root, links_may_leave)
    if safe is None:
        return None
    tar.extract(safe, root, set_attrs=True, numeric_owner=True, **_no_second_filter())
    return os.path.join(root, safe.name)


def vetted(m: tarfile.TarInfo, root: str, links_may_leave: bool) -> tarfile.TarInfo | None:
    """A sanitised copy of `m`, or None when it must not be extracted into `root`."""
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        return None
    name = os.path.normpath(m.name.lstrip("/"))
    if name == "." or name.startswith(".."):
        return None
    target = os.path.join(root, name)
    if not inside(root, os.path.realpath(target)):  # through a link already extracted, or `..`
        return None
    safe = copy.copy(m)
    safe.name, safe.mode = name, m.mode & 0o1777
    safe.uid, safe.gid, safe.uname, safe.gname = os.geteuid(), os.getegid(), "", ""
    if m.islnk():
        safe.linkname = os.path.normpath(m.linkname.lstrip("/"))
        source = os.path.join(root, safe.linkname)
        # Only to a regular file already extracted: tarfile would otherwise copy the member it names out of
        # the archive, a symbolic link included, past these checks.
        if os.path.islink(source) or not os.path.isfile(source) or not inside(root, os.path.realpath(source)):
            return None
    if m.issym() and not links_may_leave:
        resolved = os.path.realpath(os.path.join(os.path.dirname(target), m.linkname))
        if os.path.isabs(m.linkname) or not inside(root, resolved):
            return None
    return safe


def inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _no_second_filter() -> dict:
    """Ask newer Pythons not to filter again (their default from 3.14 would reject absolute links)."""
    return {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
