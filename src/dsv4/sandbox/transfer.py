"""Streaming transfers between the host and a guest agent: files and tar trees move in chunk lines, so the
time is linear in their size, and an upload or a download to a host path holds one chunk at a time in memory.

A download lands in a temporary file next to its destination (the host's disk, not its memory) and is then
extracted by `dsv4.sandbox.untar`, which resolves links against the real destination.
"""

import io
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from dsv4.sandbox.channel import CHUNK, AgentChannel
from dsv4.sandbox.errors import SandboxFileError
from dsv4.sandbox.untar import extract

PROGRESS_TIMEOUT_S = 60.0
"""A transfer fails when no chunk moved for this long (it may take longer as a whole)."""
DOWNLOAD_LIMIT = 16 << 30
"""Most bytes a download may bring to the host's disk unless the caller says otherwise."""


def read_bytes(channel: AgentChannel, path: str, max_bytes: int) -> bytes:
    buf = io.BytesIO()
    channel.request("read", PROGRESS_TIMEOUT_S, sink=buf.write, limit=_wire(max_bytes), path=path,
                    max_bytes=max_bytes)
    return buf.getvalue()  # BytesIO hands over its buffer: no second copy


def write_from(channel: AgentChannel, path: str, content: "bytes | BinaryIO", mode: int, mkdirs: bool = True) -> None:
    """Write `content` (bytes, or a binary file read to its end) to `path` in the sandbox."""
    with channel.upload("write", PROGRESS_TIMEOUT_S, path=path, mode=mode, mkdirs=mkdirs) as up:
        if isinstance(content, (bytes, bytearray, memoryview)):
            view = memoryview(content)
            for i in range(0, len(view), CHUNK):
                up.write(view[i:i + CHUNK])
        else:
            shutil.copyfileobj(content, up, CHUNK)
        up.close()


def upload_tree(channel: AgentChannel, host_dir: Path, path: str) -> None:
    """A host directory tree, tarred as it is sent, unpacked at `path` in the sandbox as it arrives."""
    with channel.upload("untar", PROGRESS_TIMEOUT_S, path=path) as up:
        with tarfile.open(fileobj=up, mode="w|") as tar:
            tar.add(host_dir, arcname=".")
        up.close()


def download(channel: AgentChannel, path: str, host_path: Path, max_bytes: int = DOWNLOAD_LIMIT) -> None:
    """A sandbox file or tree to `host_path`; links that would leave it are not created."""
    host_path = Path(host_path)
    with tempfile.TemporaryFile(dir=_existing_parent(host_path)) as spool:
        channel.request("tar", PROGRESS_TIMEOUT_S, sink=_Capped(spool, max_bytes, path).write,
                        limit=_wire(max_bytes), path=path)
        spool.seek(0)
        with tarfile.open(fileobj=spool) as tar:
            members = tar.getmembers()
            if len(members) == 1 and members[0].isfile():
                with open(host_path, "wb") as out:
                    shutil.copyfileobj(tar.extractfile(members[0]), out, CHUNK)
                return
            host_path.mkdir(parents=True, exist_ok=True)
            extract(tar, host_path, links_may_leave=False, members=members)


class _Capped:
    """Writes to a file until `limit` bytes, then fails the download (the rest of the stream is dropped)."""

    def __init__(self, f: BinaryIO, limit: int, path: str):
        self.f, self.left, self.path = f, limit, path

    def write(self, chunk: bytes) -> None:
        self.left -= len(chunk)
        if self.left < 0:
            raise SandboxFileError(27, f"download of {self.path!r} is larger than max_bytes")
        self.f.write(chunk)


def _existing_parent(p: Path) -> Path:
    p = p.absolute().parent
    while not p.exists():
        p = p.parent
    return p


def _wire(n: int) -> int:
    """Bytes of chunk lines that carry `n` bytes of payload (base64 plus each line's JSON)."""
    return n * 4 // 3 + (n // CHUNK + 1) * 256 + (1 << 20)
