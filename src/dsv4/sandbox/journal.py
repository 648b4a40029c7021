"""The command journal: every operation and its result appended durably (JSONL, fsync per record).

Line 1 holds the sandbox spec; each later line one finished operation with its request, its result, the
workspace layer it produced and the shell state after it. `Sandbox.resume(path)` rebuilds the workspace from
the layers and answers the recorded prefix from the file instead of running it again. A sandbox restored from a
snapshot with a journal starts it with `restore` records (the snapshot's layers), which are state, not calls.

An operation the process was killed in has no record: resuming rebuilds the workspace without whatever it had
done there (the sandbox dies with the process; its private workspace, /tmp and processes go), so issuing it again
runs it live exactly once as far as the workspace is concerned. Effects outside the sandbox (the network) are
not journaled and may happen again.
"""

import json
import os
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from dsv4.sandbox.config import SandboxSpec
from dsv4.sandbox.errors import JournalMismatch, SandboxError
from dsv4.sandbox.snapshot import Layer

RESTORE = "restore"
"""The op of a record that holds a snapshot layer a restored sandbox started from, not a call."""


class JournalRecord(BaseModel):
    """One finished operation."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    op: str
    request: dict
    result: object = None
    """The result as JSON (bytes base64-encoded by the caller)."""
    layer: Layer | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None


class Journal:
    """Append-only writer; each `append` returns only once the record is on disk."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @classmethod
    def start(cls, path: Path, spec: SandboxSpec) -> "Journal":
        """A new journal headed by `spec`; refuses to overwrite a journal that has content."""
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            raise SandboxError(f"journal={str(path)!r} already has records: use Sandbox.resume() on it")
        journal = cls(path)
        journal._write({"spec": json.loads(spec.model_dump_json())})
        _fsync_dir(path.parent)
        return journal

    def append(self, record: JournalRecord) -> None:
        self._write(json.loads(record.model_dump_json()))

    def _write(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self._fd, data):]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_journal(path: Path) -> tuple[SandboxSpec, list[JournalRecord]]:
    """The spec and every complete record; a torn last line (a crash mid-write) is dropped and cut off."""
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines[-1]:
        _truncate(path, len(raw) - len(lines[-1]))
    complete = [line for line in lines[:-1] if line]
    if not complete:
        raise SandboxError(f"journal={str(path)!r} has no spec line")
    spec = SandboxSpec.model_validate(json.loads(complete[0])["spec"])
    records = [JournalRecord.model_validate_json(line) for line in complete[1:]]
    for i, r in enumerate(records):
        if r.seq != i:
            raise SandboxError(f"journal={str(path)!r}: record {i} has seq={r.seq}")
    return spec, records


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Recorder:
    """Journals live operations; while resuming, answers the recorded prefix instead of running it."""

    def __init__(self, journal: Journal, pending: list[JournalRecord], tracker=None, session=None,
                 seq: int | None = None):
        """`tracker` and `session` capture workspace and shell state (None for stateless backends); `seq`: the
        next record's number (default: after `pending`, when the journal holds nothing else)."""
        self.journal, self.tracker, self.session = journal, tracker, session
        self.pending = list(pending)
        self.seq = len(pending) if seq is None else seq
        self._lock = threading.Lock()  # journaled calls run one at a time: record order is call order

    @property
    def replaying(self) -> bool:
        return bool(self.pending)

    @property
    def position(self) -> int:
        """How many of the journal's records the calls made so far account for (replayed or written)."""
        return self.seq - len(self.pending)

    def restored(self, layers, cwd: str | None, env: dict[str, str] | None) -> None:
        """Journal a workspace a sandbox starts from (`Sandbox.restore`): one `restore` record per snapshot layer,
        the shell state on the last, so `Sandbox.resume` rebuilds it; resuming answers no call from them."""
        with self._lock:
            for i, layer in enumerate(layers):
                last = i == len(layers) - 1
                self.journal.append(JournalRecord(seq=self.seq, op=RESTORE, request={"layer": i}, layer=layer,
                                                  cwd=cwd if last else None, env=env if last else None))
                self.seq += 1

    def call(self, op: str, request: dict, run, encode, decode):
        """`decode(recorded result)` for the next recorded call, else `run()` journaled with its effects."""
        with self._lock:
            return self._call(op, request, run, encode, decode)

    def _call(self, op: str, request: dict, run, encode, decode):
        if self.pending:
            rec = self.pending.pop(0)
            if rec.op != op or _identity(rec.request) != _identity(request):
                raise JournalMismatch(
                    f"journal record seq={rec.seq} is {rec.op} {rec.request!r}, "
                    f"but the call is {op} {request!r}"
                )
            return decode(rec.result)
        value = run()
        cwd, env = self.session() if self.session is not None else (None, None)
        layer = self.tracker.capture() if self.tracker is not None else None
        record = JournalRecord(seq=self.seq, op=op, request=request, result=encode(value), layer=layer,
                               cwd=cwd, env=env)
        self.journal.append(record)
        self.seq += 1
        return value


def _identity(request: dict) -> dict:
    """What must match for a recorded call to stand in for a new one (a different timeout still matches)."""
    return {k: v for k, v in request.items() if k != "timeout"}
