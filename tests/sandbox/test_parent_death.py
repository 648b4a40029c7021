"""Every backend dies with the process that created it, even when that process is killed with SIGKILL."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from dsv4.sandbox.backends.bwrap import sweep_orphans

from .procs import host_processes_with

CHILD = textwrap.dedent("""
    import json, os, shutil, sys, tempfile, time
    from pathlib import Path
    from dsv4.sandbox import BackendUnavailable, ContainerConfig, Sandbox
    kind = sys.argv[1]
    if kind.startswith("container"):
        root = Path(tempfile.mkdtemp(dir=sys.argv[2]))
        root.chmod(0o755)
        (root / "bin").mkdir()
        shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
        for applet in ("sh", "sleep", "env"):
            (root / "bin" / applet).symlink_to("busybox")
        runtime = kind.partition("-")[2]  # bwrap, runsc, or writable: bwrap over a private overlay of the image
        backend = ContainerConfig(image=root, runtime="bwrap" if runtime == "writable" else runtime,
                                  writable=runtime == "writable")
    else:
        backend = kind
    try:
        sb = Sandbox.create(backend, functions={"pid": os.getpid})
    except BackendUnavailable as e:
        print(json.dumps({"unavailable": str(e)}), flush=True)
        sys.exit(0)
    if kind == "function":
        marks = [str(sb.call("pid").value)]
    else:
        sb.run_shell("sleep %s.5 > /dev/null 2>&1 &" % 955, timeout=60)  # no literal marker in this text
        marks = [str(sb.backend.state)]
    print(json.dumps({"marks": marks}), flush=True)
    time.sleep(1000)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in "ZX"
    except OSError:
        return False


def left_behind(kind: str, marks: list[str]) -> list:
    if kind == "function":
        return [m for m in marks if alive(int(m))]
    return host_processes_with(marks[0]) + host_processes_with("sleep 955.5")


@pytest.mark.parametrize("kind", [
    "process", "function", "container-bwrap", "container-writable", "container-runsc",
    pytest.param("vm", marks=pytest.mark.slow),
])
def test_sigkill_of_the_owner_leaves_nothing_running(kind):
    if kind.startswith("container") and not __import__("shutil").which("busybox"):
        pytest.skip("busybox is not installed (Debian package busybox-static)")
    with tempfile.TemporaryDirectory() as scratch:  # bubblewrap runs as nobody: pytest's tmp_path is 0700
        os.chmod(scratch, 0o755)
        run_and_kill(kind, scratch)


def own_cgroups(state: str) -> list[str]:
    """The cgroup patterns a sandbox lists in its state directory (its own, or runsc's for it)."""
    try:
        return (Path(state) / "cgroups").read_text().split()
    except OSError:
        return []


def run_and_kill(kind: str, scratch: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, kind, scratch], stdout=subprocess.PIPE, text=True)
    first = json.loads(child.stdout.readline() or '{"unavailable": "child died"}')
    if "unavailable" in first:
        child.kill()
        child.wait()
        pytest.skip(f"backend {kind!r} unavailable: {first['unavailable']}")
    assert left_behind(kind, first["marks"])
    # this sandbox's cgroups alone: other processes' sandboxes come and go meanwhile
    cgroups = own_cgroups(first["marks"][0]) if kind != "function" else []
    child.kill()
    child.wait()
    deadline = time.monotonic() + 15
    while left_behind(kind, first["marks"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left_behind(kind, first["marks"]) == []
    if kind != "function":  # the next sandbox sweeps what the killed owner left on disk
        state = Path(first["marks"][0])
        sweep_orphans(state.parent)
        assert not state.exists() and str(state) not in Path("/proc/mounts").read_text()  # overlay, workspace
        assert not glob.glob(f"/sys/fs/cgroup/*/{state.name}") and not [p for c in cgroups for p in glob.glob(c)]
