"""Task images built from a Dockerfile by a real daemonless builder: `buildah bud`, else `podman build`.

dsv4 interprets no Dockerfile: the builder runs every instruction (RUN included) and the result is exported as
an OCI image layout, which the `container` backend unpacks (`dsv4.sandbox.image`). RUN steps use the builder's
`chroot` isolation, which needs no OCI runtime (this machine's default runtime, runsc, would be a second sandbox
around the build) and shares the host's network, so a build reaches the mirrors the host reaches. As root the
builder keeps its layers in /var/lib/containers; not as root it builds rootless (subordinate uids from
/etc/subuid, `newuidmap`).

A built image is cached under the image cache by a hash of the build context (every file's path, mode and
bytes, the Dockerfile included) and the build arguments: the same task is built once.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dsv4.sandbox.errors import SandboxError
from dsv4.sandbox.image import image_cache, local_image_config

BUILDERS = ("buildah", "podman")
INSTALL_HINT = "install buildah (Debian package buildah) or podman to build it"
BUILD_TIMEOUT_S = 3600


class BuildFailed(SandboxError):
    """The builder ran and failed; the message holds the tail of its output."""


@dataclass(frozen=True)
class BuiltImage:
    layout: Path
    """An OCI image layout directory (tag `latest`; or, from `described`, any local image form)."""
    env: dict[str, str]
    """The image's ENV, as its config records it."""
    workdir: str | None
    """Its WORKDIR, if set."""


def find_builder() -> str | None:
    """The first of buildah / podman on PATH, or None."""
    return next((path for name in BUILDERS if (path := shutil.which(name)) is not None), None)


def context_digest(context: Path, dockerfile: Path, build_args: dict[str, str]) -> str:
    """sha256 over the context's files (relative path, mode, bytes or link target) and the build arguments."""
    h = hashlib.sha256()
    h.update(dockerfile.read_bytes() + b"\0")
    for k in sorted(build_args):
        h.update(f"arg {k}={build_args[k]}\0".encode())
    for path in sorted(context.rglob("*")):
        rel = path.relative_to(context).as_posix()
        st = path.lstat()
        h.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def build_image(context: Path, dockerfile: Path | None = None, *, build_args: dict[str, str] | None = None,
                log: Path | None = None, timeout_s: float = BUILD_TIMEOUT_S) -> BuiltImage:
    """Build `context` (its `Dockerfile` unless `dockerfile` is given) and return the cached OCI layout.

    `BuildFailed` says which step failed (the builder's output tail) or that the build ran past `timeout_s`
    (everything it started is killed); `SandboxError` when no builder is installed."""
    context = Path(context).resolve()
    dockerfile = Path(dockerfile) if dockerfile is not None else context / "Dockerfile"
    if not dockerfile.is_file():
        raise SandboxError(f"{dockerfile}: no Dockerfile to build")
    builder = find_builder()
    if builder is None:
        raise SandboxError(f"no image builder: {INSTALL_HINT}")
    build_args = dict(build_args or {})
    digest = context_digest(context, dockerfile, build_args)
    root = image_cache() / "built"
    layout = root / digest
    if not (layout / "index.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            _build(builder, context, dockerfile, build_args, tmp / "layout", digest, log, time.monotonic() + timeout_s)
            try:
                os.rename(tmp / "layout", layout)  # atomic: a concurrent build of the same context keeps the first
            except OSError:
                if not (layout / "index.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return described(layout)


def described(image: Path) -> BuiltImage:
    """A local image (any form `dsv4.sandbox.image.materialize` takes) with the ENV and WORKDIR it records."""
    config = local_image_config(image)
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    return BuiltImage(image, env, config.get("WorkingDir") or None)


def _build(builder: str, context: Path, dockerfile: Path, build_args: dict[str, str], out: Path, digest: str,
           log: Path | None, deadline: float) -> None:
    tag = f"localhost/dsv4-task:{digest[:24]}"
    name = Path(builder).name
    # --force-rm: a failed RUN leaves no working container (with its mounted overlay) in the builder's storage
    build = [builder, "build" if name == "podman" else "bud", "--isolation", "chroot", "--layers", "--force-rm",
             "-f", str(dockerfile), "-t", tag, *(a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")),
             str(context)]
    steps = [(build, f"{name} build of {context}"), ([builder, "push", tag, f"oci:{out}:latest"], f"{name} push"),
             ([builder, "rmi", tag], None)]  # the layers stay in the builder's storage for the next build
    for argv, what in steps:
        code, output = _run_until(argv, deadline)
        if log is not None:
            with open(log, "a") as f:
                f.write(f"$ {' '.join(argv)}\n{output}\n")
        if code is None:
            raise BuildFailed(f"{what or name} timed out (the build's time limit): {output.strip()[-1500:]}")
        if code != 0 and what is not None:
            raise BuildFailed(f"{what} failed (exit {code}): {output.strip()[-1500:]}")


def _run_until(argv: list[str], deadline: float) -> tuple[int | None, str]:
    """(exit code, or None when `deadline` passed first and its whole process group was killed: a RUN step's
    processes too; stdout and stderr together)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out
