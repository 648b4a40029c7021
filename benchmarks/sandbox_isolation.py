"""The cost of the isolation layer of the `process` backend: the seccomp allow-list on syscall-heavy commands,
as a ratio to the same commands without a filter in the same run, and sandbox creation with its workspace quota
(an ext4 image as root) next to creation with the workspace on a tmpfs of the same size (`workspace_image`
skipped). Prints medians; nothing is asserted.
Run: `.venv/bin/python benchmarks/sandbox_isolation.py [--n 5]`.
"""

import argparse
import statistics
import time
from unittest import mock

from dsv4.sandbox import ProcessConfig, Sandbox

WORKLOADS = {
    "python: 300k stat + getpid": "python3 -c 'import os\nfor _ in range(300000): os.stat(\".\"); os.getpid()'",
    "shell: 2000 forks": "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done",
    "dd: 200k 1-byte reads": "dd if=/dev/zero of=/dev/null bs=1 count=200000 2>/dev/null",
}


def median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5)
    args = ap.parse_args()

    with Sandbox.create(ProcessConfig()) as filtered, Sandbox.create(ProcessConfig(seccomp=False)) as bare:
        print(f"{'workload':32} {'allow-list s':>13} {'no filter s':>12} {'ratio':>7}")
        for name, cmd in WORKLOADS.items():
            t_f = median_s(lambda c=cmd: filtered.run_shell(c, timeout=300), args.n)
            t_b = median_s(lambda c=cmd: bare.run_shell(c, timeout=300), args.n)
            print(f"{name:32} {t_f:13.3f} {t_b:12.3f} {t_f / t_b:7.2f}")

    def create_and_close() -> None:
        Sandbox.create("process").close()

    t_image = median_s(create_and_close, args.n)
    with mock.patch("dsv4.sandbox.workspace_image.attach", return_value="benchmark: tmpfs"):
        t_tmpfs = median_s(create_and_close, args.n)
    print(f"create + close: workspace image {t_image * 1e3:.0f} ms, tmpfs {t_tmpfs * 1e3:.0f} ms, "
          f"ratio {t_image / t_tmpfs:.2f}")


if __name__ == "__main__":
    main()
