"""Sandbox latency per backend next to bare `bwrap` / `runsc` runs in the same process, and 100 at once.

Prints medians (ms) of create + first command and of one command in a warm sandbox; nothing is asserted.
Run: `.venv/bin/python benchmarks/sandbox.py [--n 20] [--concurrent 100]`.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dsv4.sandbox import BackendUnavailable, ContainerConfig, Sandbox


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def bare_bwrap() -> None:
    subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                    "--unshare-all", "--die-with-parent", "true"], check=True)


def bare_runsc() -> None:
    subprocess.run(["runsc", "--network=none", "do", "true"], check=True, capture_output=True)


def busybox_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
    out = subprocess.run([root / "bin" / "busybox", "--list"], capture_output=True, text=True).stdout
    for applet in out.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    return root


def sandbox_row(name: str, backend, n: int, n_cmd: int, **kwargs) -> None:
    first = "call" if backend == "function" else "shell"

    def one_command(sb: Sandbox) -> None:
        if first == "call":
            sb.call("noop")
        else:
            sb.run_shell("true", timeout=10)

    def create_and_first() -> None:
        with Sandbox.create(backend, **kwargs) as sb:
            one_command(sb)

    try:
        cold = median_ms(create_and_first, n)
    except BackendUnavailable as e:
        print(f"{name:<22} unavailable: {e}")
        return
    with Sandbox.create(backend, **kwargs) as sb:
        warm = median_ms(lambda: one_command(sb), n_cmd)
    print(f"{name:<22} create+first {cold:8.1f} ms   per command {warm:7.2f} ms")


def concurrent(n: int) -> None:
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        sandboxes = list(pool.map(lambda _: Sandbox.create("process"), range(n)))
        created = time.perf_counter() - t
        t = time.perf_counter()
        results = list(pool.map(lambda sb: sb.run_shell("echo $$", timeout=60), sandboxes))
        ran = time.perf_counter() - t
        t = time.perf_counter()
        list(pool.map(lambda sb: sb.close(), sandboxes))
        closed = time.perf_counter() - t
    ok = sum(r.exit_code == 0 for r in results)
    print(f"{n} concurrent process sandboxes: create {created:.2f} s, one command each {ran:.2f} s "
          f"({ok}/{n} ok), close {closed:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20, help="create+first samples per backend")
    p.add_argument("--n-cmd", type=int, default=200, help="warm command samples per backend")
    p.add_argument("--concurrent", type=int, default=100)
    args = p.parse_args()
    print(f"bare bwrap             run true     {median_ms(bare_bwrap, args.n):8.1f} ms")
    if shutil.which("runsc") and os.geteuid() == 0:
        print(f"bare runsc do          run true     {median_ms(bare_runsc, max(3, args.n // 4)):8.1f} ms")
    sandbox_row("function", "function", args.n, args.n_cmd, functions={"noop": lambda: None})
    sandbox_row("process (bwrap)", "process", args.n, args.n_cmd)
    with tempfile.TemporaryDirectory() as d:
        Path(d).chmod(0o755)
        rootfs = busybox_rootfs(Path(d) / "rootfs") if shutil.which("busybox") else None
        if rootfs is not None:
            sandbox_row("container (bwrap)", ContainerConfig(image=rootfs), args.n, args.n_cmd)
            sandbox_row("container (runsc)", ContainerConfig(image=rootfs, runtime="runsc"),
                        max(3, args.n // 4), args.n_cmd // 4)
    sandbox_row("vm (qemu)", "vm", 1, 10)
    concurrent(args.concurrent)


if __name__ == "__main__":
    main()
