"""Images on disk: a rootfs directory, an OCI image layout (directory or tarball), a `docker save` tarball,
or a rootfs tarball.

Layers are applied in order with OCI whiteouts (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties a directory).
Extraction is vetted by `dsv4.sandbox.untar` (nothing lands outside the rootfs, no device nodes).
"""

import json
import os
import shutil
import tarfile
from pathlib import Path

from dsv4.sandbox.errors import SandboxError
from dsv4.sandbox.untar import extract, inside

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
        extract(tar, unpacked, links_may_leave=True)
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
        parent, _, name = os.path.normpath(m.name.lstrip("/")).rpartition("/")
        where = os.path.realpath(rootfs / parent)  # a whiteout must not reach outside through `..` or a link
        if name.startswith(WHITEOUT) and not inside(os.path.realpath(rootfs), where):
            continue
        if name == OPAQUE:
            for child in Path(where).glob("*"):
                _remove(child)
        elif name.startswith(WHITEOUT):
            _remove(Path(where) / name[len(WHITEOUT):])
        else:
            keep.append(m)
    extract(tar, rootfs, links_may_leave=True, members=keep)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

