"""The workspace quota on the host: an ext4 image of the workspace's size and inode count, loop-mounted on the
sandbox's host workspace directory, so that what a sandbox writes there lands in a file that cannot grow past
the quota (the image is sparse: the host disk holds only what was written).

Mounting needs root and a loop device; without them the backends fall back to a private tmpfs of the same size
(memory, not disk), and `attach` says why.
"""

import os
import shutil
import subprocess
from pathlib import Path

IMAGE_NAME = "workspace.img"
SBIN = "/usr/sbin:/sbin"


def attach(directory: Path, size_mb: int, inodes: int, uid: int) -> str | None:
    """Mount a fresh ext4 image of `size_mb` MiB and `inodes` inodes, owned by `uid`, on `directory`; None when
    mounted, else the reason it could not be (the caller then uses a tmpfs)."""
    if os.geteuid() != 0:
        return "not root: no loop mount"
    tools = {name: shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SBIN}") for name in ("mkfs.ext4", "mount")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        return f"{', '.join(missing)} not found (Debian packages e2fsprogs, mount)"
    image = directory.parent / IMAGE_NAME
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    # No journal (the workspace does not outlive its sandbox), no reserved blocks, no discard of a fresh file.
    steps = [
        [tools["mkfs.ext4"], "-q", "-F", "-N", str(inodes), "-m", "0", "-O", "^has_journal",
         "-E", f"root_owner={uid}:{uid},lazy_itable_init=1,nodiscard", str(image)],
        [tools["mount"], "-t", "ext4", "-o", "loop,nosuid,nodev", str(image), str(directory)],
    ]
    for argv in steps:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": SBIN + ":/usr/bin:/bin"})
        if r.returncode != 0:
            image.unlink()
            return f"{Path(argv[0]).name} failed: {r.stderr.strip()[-300:]}"
    (directory / "lost+found").rmdir()  # the workspace starts empty, as the sandbox's user sees it
    directory.chmod(0o700)
    return None


def detach(directory: Path) -> bool:
    """Unmount the workspace image if `directory` holds one (lazily: a dying process may still hold it; the loop
    device is freed with the last reference); True once nothing is mounted there."""
    if os.path.ismount(directory):
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=60,
                       env={"PATH": SBIN + ":/usr/bin:/bin"})
    return not os.path.ismount(directory)
