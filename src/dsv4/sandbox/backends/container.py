"""The `container` backend: an OCI image rootfs under bubblewrap or gVisor `runsc`.

The image needs only `/bin/sh`: the guest agent is the host's Python, mounted at `/run/dsv4-host` and started
through the host's dynamic loader, so it never mixes with the image's own libraries.
"""

import os
import shutil
import struct
from pathlib import Path

from dsv4.sandbox import overlay
from dsv4.sandbox.backends.bwrap import BwrapBackend, attach_workspace, find_tool
from dsv4.sandbox.config import ContainerConfig, SandboxSpec
from dsv4.sandbox.errors import BackendUnavailable, SandboxError
from dsv4.sandbox.image import materialize
from dsv4.sandbox.untar import inside

HOST_DIR = "/run/dsv4-host"
MOUNTED_BY_SANDBOX = {"proc", "dev", "tmp", "run", "sys"}


def elf_interpreter(binary: str) -> str:
    """PT_INTERP of a 64-bit little-endian ELF executable (its dynamic loader)."""
    with open(binary, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            raise BackendUnavailable(f"{binary} is not a 64-bit ELF executable")
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _, p_offset, _, _, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type == 3:
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode()
    raise BackendUnavailable(f"{binary} has no PT_INTERP (statically linked?)")


def injected_python(python: str) -> list[str]:
    """argv that runs the host's Python inside a foreign rootfs through the host's own loader."""
    exe = os.path.realpath(shutil.which(python) or python)
    loader = os.path.realpath(elf_interpreter(exe))
    libs = HOST_DIR + os.path.dirname(loader)
    return [HOST_DIR + loader, "--library-path", libs, HOST_DIR + exe, "-s", "-S"]


def rootfs_args(rootfs: Path) -> list[str]:
    """Each top-level entry of the rootfs, read-only, on bubblewrap's own root."""
    args: list[str] = []
    for entry in sorted(os.listdir(rootfs)):
        src = rootfs / entry
        if entry in MOUNTED_BY_SANDBOX:
            continue
        if src.is_symlink():
            args += ["--symlink", os.readlink(src), f"/{entry}"]
        else:
            args += ["--ro-bind", str(src), f"/{entry}"]
    return args


class ContainerBackend(BwrapBackend):
    """bubblewrap with the image as root filesystem and everything else as in the `process` backend."""

    def __init__(self, spec: SandboxSpec):
        cfg = spec.backend
        assert isinstance(cfg, ContainerConfig)
        if cfg.image is None:
            raise BackendUnavailable("the container backend needs an image: "
                                     "Sandbox.create('container', rootfs=DIR_OR_TARBALL)")
        self.rootfs: Path | None = None
        super().__init__(spec, argv_root=[])

    def _attach_workspace(self) -> tuple[Path | None, str]:
        """The image first: a writable root's upper layer, on the workspace image, needs an inode per entry."""
        scratch = self.state / "image"
        scratch.mkdir()
        self.rootfs = materialize(self.cfg.image, scratch)
        if not self.cfg.writable:
            return super()._attach_workspace()
        workspace, store = attach_workspace(self.state, self.spec.limits, self.uid, overlay.count_entries(self.rootfs))
        if workspace is None:
            raise BackendUnavailable(f"a writable image root keeps its overlay on an ext4 workspace image: {store}")
        return workspace, store

    def _start(self, root_args: list[str], writable_root: bool = False) -> None:
        assert self.rootfs is not None
        self.agent_argv = injected_python(self.cfg.python)
        self.late_binds = ["--ro-bind", "/usr", f"{HOST_DIR}/usr"]
        if not self.cfg.writable:
            super()._start(rootfs_args(self.rootfs))
            return
        merged = self.state / overlay.ROOT_NAME
        overlay.mount(self.rootfs, self.state / "workspace", merged, self.uid)
        made = merged
        for part in Path(self.spec.workdir).parts[1:]:  # the workdir, if the image lacks it, the sandbox's own
            made = made / part
            if not within(merged, made):  # the image's link would have host root make it somewhere on the host
                raise SandboxError(f"workdir={self.spec.workdir!r} goes through a link of the image to "
                                   f"{os.readlink(made)!r}, which is not a directory of the image")
            if not made.exists():
                made.mkdir(mode=0o755)
                os.lchown(made, self.uid, self.uid)
        single_uid_apt(merged, self.uid)
        # The merged root on bubblewrap's /: the sandbox sees the image's own symlinks and files
        super()._start(["--bind", str(merged), "/"], writable_root=True)


APT_SANDBOX_CONF = "etc/apt/apt.conf.d/00dsv4-sandbox-user"


def single_uid_apt(root: Path, uid: int) -> None:
    """Tell apt (if the image has it) to fetch as root: its default drops to the `_apt` user, which a user
    namespace mapping only the sandbox's own uid does not have (setgroups is refused there, uid 42 unmapped)."""
    conf = root / APT_SANDBOX_CONF
    if conf.parent.is_dir() and within(root, conf.parent) and not conf.is_symlink():
        conf.write_text('APT::Sandbox::User "root";\n')
        os.lchown(conf, uid, uid)


def within(root: Path, path: Path) -> bool:
    """Whether `path` (made, or to be made, by host root) resolves inside `root`, whatever links the image has."""
    return inside(os.path.realpath(root), os.path.realpath(path))


def start_container(spec: SandboxSpec):
    cfg = spec.backend
    assert isinstance(cfg, ContainerConfig)
    if cfg.runtime == "runsc":
        if cfg.writable:
            raise BackendUnavailable("a writable image root runs under runtime='bwrap' only")
        from dsv4.sandbox.backends.runsc import RunscBackend

        find_tool("runsc")
        return RunscBackend(spec)
    return ContainerBackend(spec)
