"""What a task image costs per sandbox: creating a `container` sandbox over an image read-only (uid 1000, fresh
workspace) next to the same image writable (uid 0 over a private overlay, every entry chowned to the sandbox's
uid through the overlay's metacopy), and next to the `process` backend (no image), each up to its first command;
plus the one-time unpack of the image into the cache (umoci). Prints medians and ratios; nothing is asserted.
Run (as root, umoci installed): `.venv/bin/python benchmarks/sandbox_task_image.py OCI_LAYOUT [--n 5]`, e.g. the
Debian base the slow task-image test keeps under /var/cache/dsv4/images/test-bases/.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from dsv4.sandbox import ContainerConfig, ProcessConfig, Sandbox
from dsv4.sandbox.overlay import count_entries


def started_s(config, n: int, workdir: str) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with Sandbox.create(config, workdir=workdir) as sb:
            sb.run_shell("true", timeout=60)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path, help="an OCI layout directory (or any image form the container backend takes)")
    ap.add_argument("--n", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsv4-bench-cache-") as cache:
        os.chmod(cache, 0o711)
        os.environ["DSV4_IMAGE_CACHE"] = cache  # a cold cache of its own, removed after
        t = time.perf_counter()
        started_s(ContainerConfig(image=args.image), 1, "/workspace")
        cold = time.perf_counter() - t
        entries = count_entries(next((Path(cache) / "rootfs").iterdir()))
        process = started_s(ProcessConfig(), args.n, "/workspace")
        read_only = started_s(ContainerConfig(image=args.image), args.n, "/workspace")
        writable = started_s(ContainerConfig(image=args.image, writable=True), args.n, "/app")
    print(f"image {args.image}: {entries} entries; first sandbox (umoci unpack into the cache) {cold:.2f} s")
    print(f"{'sandbox up to its first command':44} {'median s':>9} {'vs process':>11}")
    for name, s in [("process (host system, no image)", process), ("container, image read-only", read_only),
                    ("container, image writable (overlay + chown)", writable)]:
        print(f"{name:44} {s:9.3f} {s / process:10.2f}x")


if __name__ == "__main__":
    main()
