"""Images on disk: a rootfs directory, an OCI image layout (directory or tarball), a `docker save` tarball,
or a rootfs tarball.

Layered images are unpacked by maintained tools, not here: `umoci raw unpack` applies an OCI layout's layers
(whiteouts, opaque directories, hard links, ownership), and a `docker save` archive is first turned into an OCI
layout by `skopeo copy docker-archive:... oci:...`. An unpacked image is kept in a cache keyed by its manifest
digest (`image_cache()`), shared read-only by every sandbox that runs it; a writable sandbox puts a private
overlay on top (`dsv4.sandbox.overlay`). Tarballs (an OCI layout's metadata and blobs, or a plain rootfs) are
extracted through `dsv4.sandbox.untar` (nothing lands outside the destination, no device nodes); an unpacked
image loses its device nodes, FIFOs and setuid bits too (`defuse`).
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

from dsv4.sandbox.errors import BackendUnavailable, SandboxError
from dsv4.sandbox.untar import extract

REF_NAME = "org.opencontainers.image.ref.name"
UNPACK_TIMEOUT_S = 1800


def is_layout(path: Path) -> bool:
    return (path / "index.json").is_file() and (path / "oci-layout").is_file()


def image_cache() -> Path:
    """Where unpacked images (and built ones, `dsv4.sandbox.image_build`) are kept: $DSV4_IMAGE_CACHE, else
    /var/cache/dsv4/images as root (the sandboxes' own uids must reach it: not under /root), else
    ~/.cache/dsv4/images."""
    if os.environ.get("DSV4_IMAGE_CACHE"):
        return Path(os.environ["DSV4_IMAGE_CACHE"])
    return Path("/var/cache/dsv4/images") if os.geteuid() == 0 else Path.home() / ".cache" / "dsv4" / "images"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackendUnavailable(f"`{name}` is needed to unpack this image and is not installed "
                                 f"(Debian package {package})")
    return path


def materialize(image: Path, scratch: Path) -> Path:
    """A rootfs directory for `image`: the directory itself, the cached unpacked image, or a rootfs tarball
    extracted into `scratch`. Never write to what it returns unless it is under `scratch`."""
    image = Path(image)
    if image.is_dir():
        return unpack_cached(image, scratch) if is_layout(image) else image
    if not image.is_file():
        raise SandboxError(f"image={str(image)!r} is neither a directory nor a tarball")
    seen = image_cache() / "archives" / _archive_key(image)
    try:  # an image archive unpacked before: no second conversion or extraction
        rootfs = _rootfs_path(seen.read_text().strip())
        if rootfs.is_dir():
            return rootfs
    except (OSError, SandboxError):
        pass
    unpacked = scratch / "image"
    unpacked.mkdir()
    with tarfile.open(image) as tar:
        names = set(tar.getnames())
        if "manifest.json" in names and "index.json" not in names:  # `docker save`: skopeo reads the archive
            shutil.rmtree(unpacked)
            layout = docker_archive_layout(image, scratch / "layout")
        else:
            extract(tar, unpacked, links_may_leave=True)
            layout = unpacked
    if not is_layout(layout):
        return unpacked  # a plain rootfs tarball
    rootfs = unpack_cached(layout, scratch)
    seen.parent.mkdir(parents=True, exist_ok=True)
    seen.write_text(manifest_digest(layout))
    shutil.rmtree(layout)
    return rootfs


def _archive_key(archive: Path) -> str:
    """An image archive's identity for the cache: its real path, size and modification time."""
    st = archive.stat()
    return hashlib.sha256(f"{os.path.realpath(archive)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()


def docker_archive_layout(archive: Path, layout: Path) -> Path:
    """An OCI layout of a `docker save` archive's image, written by skopeo."""
    skopeo = tool("skopeo", "skopeo")
    _run([skopeo, "copy", "--quiet", f"docker-archive:{archive}", f"oci:{layout}:latest"], "skopeo copy")
    return layout


def manifest_digest(layout: Path) -> str:
    """The digest of the layout's first image manifest (what the cache is keyed by)."""
    try:
        return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise SandboxError(f"{layout}/index.json names no image manifest ({e})") from e


def unpack_cached(layout: Path, scratch: Path) -> Path:
    """The rootfs of the layout's first image, unpacked once by umoci into the cache."""
    rootfs = _rootfs_path(manifest_digest(layout))
    if rootfs.is_dir():
        return rootfs
    root = rootfs.parent
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        root.chmod(0o711)  # sandboxes run as uids of their own and go through it to their image
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        umoci = tool("umoci", "umoci")
        rootless = [] if os.geteuid() == 0 else ["--rootless"]
        _run([umoci, "raw", "unpack", *rootless, "--image", f"{_tagged(layout, scratch)}", str(tmp / "rootfs")],
             "umoci raw unpack")
        defuse(tmp / "rootfs")
        (tmp / "rootfs").chmod(0o755)
        try:
            os.rename(tmp / "rootfs", rootfs)  # atomic: a concurrent unpack of the same image keeps the first
        except OSError:
            if not rootfs.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rootfs


def defuse(rootfs: Path) -> None:
    """Remove device nodes, FIFOs and sockets and drop setuid / setgid bits in an unpacked image, before anyone can
    reach it: umoci, as root, makes an image's device nodes and keeps its modes, and the cache is on the host's
    disk, where a world-writable block device or a setuid-root file would be a way into the host."""
    for parent, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            path = os.path.join(parent, name)
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode) or \
                    stat.S_ISSOCK(st.st_mode):
                os.unlink(path)
            elif not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))


def _rootfs_path(digest: str) -> Path:
    """Where the image of manifest `digest` is (or would be) unpacked in the cache."""
    algo, _, hexdigest = digest.partition(":")
    if not hexdigest.isalnum() or not algo.isalnum():
        raise SandboxError(f"manifest digest {digest!r} is malformed")
    return image_cache() / "rootfs" / f"{algo}-{hexdigest}"


def _tagged(layout: Path, scratch: Path) -> str:
    """`layout:tag` for umoci, which finds images by tag: the first manifest's own, or (a layout without one) a
    scratch layout whose index names it `latest`, sharing the blobs."""
    index = json.loads((layout / "index.json").read_text())
    first = index["manifests"][0]
    name = (first.get("annotations") or {}).get(REF_NAME)
    if name:
        return f"{layout}:{name}"
    tagged = scratch / "tagged"
    tagged.mkdir()
    shutil.copyfile(layout / "oci-layout", tagged / "oci-layout")
    (tagged / "blobs").symlink_to((layout / "blobs").resolve())
    first = dict(first, annotations={**(first.get("annotations") or {}), REF_NAME: "latest"})
    first.setdefault("mediaType", "application/vnd.oci.image.manifest.v1+json")
    (tagged / "index.json").write_text(json.dumps(dict(index, manifests=[first])))
    return f"{tagged}:latest"


def image_config(layout: Path) -> dict:
    """The `config` object (Env, WorkingDir, User, ...) of the layout's first image."""
    manifest = json.loads(_blob(layout, manifest_digest(layout)).read_text())
    return json.loads(_blob(layout, manifest["config"]["digest"]).read_text()).get("config") or {}


def local_image_config(image: Path) -> dict:
    """`image_config` of a local image in any form `materialize` takes: an OCI layout directory, an OCI archive or
    a `docker save` archive (read by `skopeo inspect --config`); {} for a plain rootfs."""
    image = Path(image)
    if image.is_dir():
        return image_config(image) if is_layout(image) else {}
    if not image.is_file():
        raise SandboxError(f"image={str(image)!r} is neither a directory nor a tarball")
    with tarfile.open(image) as tar:
        names = set(tar.getnames())
    transport = "oci-archive" if "index.json" in names else "docker-archive" if "manifest.json" in names else None
    if transport is None:
        return {}
    r = subprocess.run([tool("skopeo", "skopeo"), "inspect", "--config", f"{transport}:{image}"], capture_output=True,
                       text=True, timeout=UNPACK_TIMEOUT_S)
    if r.returncode != 0:
        raise SandboxError(f"skopeo inspect --config {transport}:{image} failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout).get("config") or {}


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algo / hexdigest


def _run(argv: list[str], what: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=UNPACK_TIMEOUT_S)
    if r.returncode != 0:
        raise SandboxError(f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}")
