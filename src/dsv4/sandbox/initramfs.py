"""A minimal initramfs (uncompressed cpio "newc"): busybox, an init script, the kernel's 9p/virtio modules."""

import os
import shutil
import stat
from pathlib import Path

from dsv4.sandbox.errors import BackendUnavailable

MODULES = ("virtio_pci", "9pnet_virtio", "9p")
DIRS = ("bin", "dev", "proc", "sys", "tmp", "run", "lib", "lib/modules")


class Cpio:
    """Writes cpio newc records (the format the kernel unpacks into its rootfs)."""

    def __init__(self, path: Path):
        self.f = open(path, "wb")
        self.ino = 0

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.f.write(b"070701" + b"".join(b"%08X" % v for v in fields))
        self._padded(name.encode() + b"\0", header=110)
        self._padded(data)

    def _padded(self, data: bytes, header: int = 0) -> None:
        self.f.write(data)
        self.f.write(b"\0" * (-(header + len(data)) % 4))

    def close(self) -> None:
        self.add("TRAILER!!!", 0)
        self.f.close()


def kernel_release(kernel: str) -> str:
    """`6.1.0-57-amd64` from `/boot/vmlinuz-6.1.0-57-amd64`."""
    return os.path.basename(kernel).removeprefix("vmlinuz-")


def module_order(release: str) -> list[str]:
    """The modules needed for virtio-pci and 9p, dependencies first (paths relative to the modules dir)."""
    dep_file = Path("/lib/modules") / release / "modules.dep"
    if not dep_file.is_file():
        raise BackendUnavailable(f"{dep_file} is missing: the kernel's modules are not installed")
    deps = {}
    for line in dep_file.read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        for d in reversed(deps[mod]):
            visit(d)
        if mod not in order:
            order.append(mod)

    for name in MODULES:
        if name not in by_name:
            raise BackendUnavailable(f"kernel {release} has no module {name} (needed for the 9p shares)")
        visit(by_name[name])
    return order


def build_initramfs(path: Path, kernel: str, init: str) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise BackendUnavailable("busybox is not installed (Debian package busybox-static)")
    release = kernel_release(kernel)
    modules = module_order(release)
    cpio = Cpio(path)
    for d in DIRS:
        cpio.add(d, stat.S_IFDIR | 0o755)
    cpio.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    cpio.add("bin/busybox", stat.S_IFREG | 0o755, Path(busybox).read_bytes())
    cpio.add("init", stat.S_IFREG | 0o755, init.encode())
    names = []
    for mod in modules:
        name = mod.replace("/", "_")
        data = Path("/lib/modules", release, mod).read_bytes()
        if mod.endswith(".xz"):
            import lzma

            data, name = lzma.decompress(data), name.removesuffix(".xz")
        cpio.add(f"lib/modules/{name}", stat.S_IFREG | 0o644, data)
        names.append(name)
    cpio.add("modules.order", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode())
    cpio.close()
    path.chmod(0o644)
