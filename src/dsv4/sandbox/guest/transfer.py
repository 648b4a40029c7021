"""Tar trees both ways: `untar` unpacks an upload as its chunks arrive, `tar` and `pack` stream one back."""

import os
import stat
import tarfile
import threading

from .files import CHUNK
from .session import resolve


class UntarUpload:
    """A tar stream unpacked as it arrives: chunks go through a pipe to a thread extracting member by member."""

    def __init__(self, session, req):
        self.dest = resolve(session, req["path"])
        os.makedirs(self.dest, exist_ok=True)
        r, w = os.pipe()
        self.pipe = os.fdopen(w, "wb")
        self.error = None
        self.thread = threading.Thread(target=self._extract, args=(os.fdopen(r, "rb"),), daemon=True)
        self.thread.start()

    def _extract(self, pipe):
        try:
            with pipe, tarfile.open(fileobj=pipe, mode="r|*") as tar:
                for m in tar:
                    if m.isfile() or m.isdir() or m.issym():
                        clear_for(os.path.join(self.dest, m.name), m)
                        tar.extract(m, self.dest, **trusted())
        except Exception as e:  # noqa: BLE001 - reported to the host as the upload's result
            self.error = e

    def feed(self, data):
        try:
            self.pipe.write(data)
        except BrokenPipeError:  # the extraction failed: its error is the result
            pass

    def finish(self):
        self.abort()
        if self.error is not None:
            raise self.error
        return {}

    def abort(self):
        try:
            self.pipe.close()
        except OSError:
            pass
        self.thread.join()


def clear_for(target, member):
    """Remove what is in the way of a member that is not a directory: a FIFO or device in its place would
    block the extraction for good, and a link would be written through."""
    try:
        st = os.lstat(target)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode) and not (member.isfile() and stat.S_ISREG(st.st_mode)):
        os.unlink(target)


def trusted():
    # Inside the sandbox nothing can leave it; newer Pythons must not filter absolute links out.
    return {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class DataWriter:
    """A write-only file object sending what is written as data lines of CHUNK bytes."""

    def __init__(self, session, rid):
        self.session, self.rid, self.buf = session, rid, bytearray()

    def write(self, data):
        self.buf += data
        while len(self.buf) >= CHUNK:
            self.session.send_data(self.rid, self.buf[:CHUNK])
            del self.buf[:CHUNK]
        return len(data)

    def flush(self):
        if self.buf:
            self.session.send_data(self.rid, self.buf)
            self.buf = bytearray()


def add_entry(tar, path, arcname):
    """Add one path without recursion. A regular file is opened without blocking and archived from that fd,
    so a FIFO swapped in after a listing is archived as a FIFO, never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:  # a link (ELOOP), a socket, or unreadable: archived from lstat below, or skipped
        fd = None
    if fd is not None and not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
    elif fd is not None:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            tar.addfile(tar.gettarinfo(arcname=arcname, fileobj=f), f)
        return
    try:
        info = tar.gettarinfo(path, arcname)
    except OSError:
        return
    if info is not None and not info.isreg():  # None: a socket
        tar.addfile(info)


def stream_tar(session, req, entries):
    """A tar of (path, arcname) entries streamed as data lines. A member that fails half-written fails the
    whole operation (the stream cannot take it back); one that cannot be opened is left out."""
    out = DataWriter(session, req["id"])
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in entries:
            add_entry(tar, path, arcname)
    out.flush()
    return {}


def op_tar(session, req):
    """A tar of a file or a tree (links kept as links), the root as ".", streamed as data lines."""
    root = resolve(session, req["path"])
    os.lstat(root)
    entries = [(root, ".")]
    if os.path.isdir(root) and not os.path.islink(root):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                full = os.path.join(dirpath, name)
                entries.append((full, os.path.relpath(full, root)))
    return stream_tar(session, req, entries)


def op_pack(session, req):
    """A tar of the listed paths (relative to `path`), each added without recursion, streamed."""
    root = resolve(session, req["path"])
    return stream_tar(session, req, [(os.path.join(root, rel), rel) for rel in req["paths"]])
