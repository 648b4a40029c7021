"""Images on disk: a rootfs directory, an OCI image layout (directory or tarball), a `docker save` tarball,
or a rootfs tarball.

Layers are applied in order with OCI whiteouts (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties a directory).
Device nodes and members that would land outside the rootfs are skipped.
"""

import json
import shutil
import tarfile
from pathlib import Path

from dsv4.sandbox.errors import SandboxError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def is_layout(path: Path) -> bool:
    return (path / "index.json").is_file() and (path / "oci-layout").is_file()


def materialize(image: Path, scratch: Path) -> Path:
    """A rootfs directory for `image`, unpacking into `scratch` when needed."""
    image = Path(image)
    if image.is_dir():
        return unpack_layout(image, scratch / "rootfs") if is_layout(image) else image
    if not image.is_file():
        raise SandboxError(f"image={str(image)!r} is neither a directory nor a tarball")
    unpacked = scratch / "image"
    unpacked.mkdir()
    with tarfile.open(image) as tar:
        tar.extractall(unpacked, filter=_safe)
    if is_layout(unpacked) or (unpacked / "manifest.json").is_file():
        rootfs = unpack_layout(unpacked, scratch / "rootfs")
        shutil.rmtree(unpacked)
        return rootfs
    return unpacked


def unpack_layout(layout: Path, rootfs: Path) -> Path:
    """Apply the layers of the first image (OCI index, else `docker save`'s manifest.json) onto `rootfs`."""
    if is_layout(layout):
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
        layers = [_blob(layout, layer["digest"]) for layer in manifest["layers"]]
    else:
        layers = [layout / name for name in json.loads((layout / "manifest.json").read_text())[0]["Layers"]]
    rootfs.mkdir(parents=True)
    for path in layers:
        with tarfile.open(path) as tar:
            _apply_layer(tar, rootfs)
    return rootfs


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algo / hexdigest


def _apply_layer(tar: tarfile.TarFile, rootfs: Path) -> None:
    keep = []
    for m in tar.getmembers():
        parent, _, name = m.name.rpartition("/")
        if name == OPAQUE:
            for child in (rootfs / parent).glob("*"):
                _remove(child)
        elif name.startswith(WHITEOUT):
            _remove(rootfs / parent / name[len(WHITEOUT):])
        else:
            keep.append(m)
    tar.extractall(rootfs, members=keep, filter=_safe)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "tar" filter (no escaping member paths), minus device nodes and FIFOs."""
    if member.isdev():
        return None
    try:
        return tarfile.tar_filter(member, dest)
    except tarfile.FilterError:
        return None
