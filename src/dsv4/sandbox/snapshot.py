"""Incremental workspace snapshots: each layer holds only what changed since the previous one.

A `Snapshot` is the sandbox spec plus its chain of layers; `Sandbox.restore(snap)` starts a new sandbox and
applies the layers in order (deletions first, then the tar of added or changed entries).
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from dsv4.sandbox.backend import Backend
from dsv4.sandbox.config import SandboxSpec

Manifest = dict[str, list]
"""Relative path -> [kind, size, mtime_ns, mode, link target], as the guest agent's `scan` reports it."""


class Layer(BaseModel):
    """One step of change: paths removed, then a tar of paths added or modified."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    deleted: tuple[str, ...] = ()
    tar: bytes = b""


class Snapshot(BaseModel):
    """A sandbox's workspace as a chain of layers, restorable as a new sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: SandboxSpec
    layers: tuple[Layer, ...] = ()
    cwd: str | None = None
    env: dict[str, str] | None = None

    def save(self, path: Path) -> None:
        """Write as one JSON document (layers base64-encoded)."""
        Path(path).write_text(self.model_dump_json())

    @classmethod
    def load(cls, path: Path) -> "Snapshot":
        return cls.model_validate_json(Path(path).read_text())

    @property
    def size_bytes(self) -> int:
        return sum(len(layer.tar) for layer in self.layers)


def diff(old: Manifest, new: Manifest) -> tuple[list[str], list[str]]:
    """(changed or added paths, deleted paths); a path under a deleted directory is not listed twice."""
    changed = sorted(p for p, e in new.items() if old.get(p) != e)
    gone = sorted(p for p in old if p not in new)
    gone_set = set(gone)
    top = [p for p in gone if not any(p.startswith(d + "/") for d in _parents(p) if d in gone_set)]
    return changed, top


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class WorkspaceTracker:
    """Remembers the workspace manifest and turns what changed since into a `Layer`."""

    def __init__(self, backend: Backend, workdir: str, manifest: Manifest | None = None):
        self.backend, self.workdir = backend, workdir
        self.manifest = self.scan() if manifest is None else manifest

    @classmethod
    def empty(cls, backend: Backend, workdir: str) -> "WorkspaceTracker":
        """A tracker whose first capture holds the whole workspace."""
        return cls(backend, workdir, manifest={})

    def scan(self) -> Manifest:
        return self.backend.scan(self.workdir)

    def capture(self) -> Layer | None:
        """The layer of changes since the last capture, or None when nothing changed."""
        new = self.scan()
        changed, deleted = diff(self.manifest, new)
        self.manifest = new
        if not changed and not deleted:
            return None
        tar = self.backend.pack_paths(self.workdir, changed) if changed else b""
        return Layer(deleted=tuple(deleted), tar=tar)


def apply_layers(backend: Backend, workdir: str, layers: tuple[Layer, ...] | list[Layer]) -> None:
    for layer in layers:
        if layer.deleted:
            backend.remove(workdir, list(layer.deleted))
        if layer.tar:
            backend.unpack(workdir, layer.tar)

