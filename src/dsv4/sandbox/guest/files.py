"""Single files and listings: read, write (an upload), list, scan, remove; regular files only, never blocking."""

import os
import shutil
import stat

from .session import resolve

CHUNK = 256 << 10
"""Payload bytes per data line (the host refuses lines over 4 MiB)."""


def open_regular(path, flags, mode=0o644):
    """An fd of `path` when it is a regular file. FIFOs, devices, sockets and directories are refused by
    name, without blocking on them: O_NONBLOCK for the open (cleared again for a regular file), then fstat."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == 6:  # ENXIO: a FIFO without a reader, or a device without its driver
            not_regular(path, os.stat(path).st_mode)
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        not_regular(path, st.st_mode)
    os.set_blocking(fd, True)
    return fd


def not_regular(path, mode):
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    raise OSError(21 if stat.S_ISDIR(mode) else 22, f"{path!r} is {kind}: only regular files are read or written")


def op_read(session, req):
    """Stream a regular file as data lines; more than max_bytes is an error (EFBIG)."""
    limit = req["max_bytes"]
    with os.fdopen(open_regular(resolve(session, req["path"]), os.O_RDONLY), "rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise OSError(27, f"file larger than max_bytes={limit}")
        sent = 0
        while chunk := f.read(min(CHUNK, limit + 1 - sent)):
            sent += len(chunk)
            if sent > limit:  # it grew while being read
                raise OSError(27, f"file larger than max_bytes={limit}")
            session.send_data(req["id"], chunk)
    return {}


class WriteUpload:
    """A file written chunk by chunk as the host sends it; the first error is kept and reported at the end."""

    def __init__(self, session, req):
        path = resolve(session, req["path"])
        if req.get("mkdirs"):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.f = os.fdopen(open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, req.get("mode", 0o644)), "wb")

    def feed(self, data):
        self.f.write(data)

    def finish(self):
        self.f.close()
        return {}

    def abort(self):
        self.f.close()


def op_list(session, req):
    path = resolve(session, req["path"])
    entries = []
    with os.scandir(path) as it:
        for e in it:
            kind = "dir" if e.is_dir(follow_symlinks=False) else "link" if e.is_symlink() else "file"
            size = e.stat(follow_symlinks=False).st_size
            entries.append({"name": e.name, "kind": kind, "size": size})
    session.send_parts(req["id"], "entries", sorted(entries, key=lambda e: e["name"]))
    return {}


def entry_of(path):
    st = os.lstat(path)
    if os.path.islink(path):
        return ["link", 0, st.st_mtime_ns, st.st_mode, os.readlink(path)]
    kind = "dir" if os.path.isdir(path) else "file"
    is_file = kind == "file"
    return [kind, st.st_size if is_file else 0, st.st_mtime_ns if is_file else 0, st.st_mode, None]


def op_scan(session, req):
    """Manifest of a tree: relative path -> [kind, size, mtime_ns, mode, link target], sent in parts."""
    root = resolve(session, req["path"])
    manifest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                manifest[os.path.relpath(full, root)] = entry_of(full)
            except OSError:
                continue
    session.send_parts(req["id"], "manifest", manifest)
    return {}


def op_remove(session, req):
    root = resolve(session, req["path"])
    for rel in sorted(req["paths"], reverse=True):
        full = os.path.join(root, rel)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        elif os.path.lexists(full):
            os.unlink(full)
    return {}
