"""Escape and abuse attempts against the `process` backend; each must fail in the way named."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .procs import descendants, host_processes_with

REPO = Path(__file__).resolve().parents[2]


def test_cannot_read_shadow_or_private_host_dirs(sb):
    r = sb.run_shell("cat /etc/shadow; ls /root /home /var /sys 2>&1; cat /proc/1/cmdline", timeout=10)
    assert "root:" not in r.stdout
    for d in ("/root", "/home", "/var", "/sys"):
        assert f"cannot access '{d}'" in r.stdout
    assert "pytest" not in r.stdout  # pid 1 is the sandbox's own init, not anything of the host


def test_cannot_see_the_project_checkout(sb):
    assert (REPO / "pyproject.toml").exists()
    r = sb.run_shell(f"cat {REPO}/pyproject.toml; ls {REPO}", timeout=10)
    assert r.exit_code != 0 and "dsv4" not in r.stdout
    assert "No such file or directory" in r.stderr


OUTSIDE = ["/usr/evil", "/etc/evil", "/evil", "/dev/evil", "/run/dsv4/agent.pyz", "/proc/sys/kernel/hostname"]


@pytest.mark.parametrize("target", OUTSIDE)
def test_cannot_write_outside_the_workspace(sb, target):
    r = sb.run_shell(f"echo pwned > {target}", timeout=10)
    assert r.exit_code != 0
    assert not Path(target).exists() or "pwned" not in Path(target).read_text(errors="replace")


def test_tmp_and_shm_are_capped_but_usable(make_sandbox):
    sb = make_sandbox()
    r = sb.run_shell("python3 -c 'import multiprocessing as m; m.Lock(); print(\"semaphore ok\")'; "
                     "for d in /tmp /dev/shm; do head -c 400000000 /dev/zero > $d/fill; done", timeout=30)
    assert r.stdout == "semaphore ok\n" and r.stderr.count("No space left on device") == 2
    sb.run_shell("cd /tmp && export AFTER=full", timeout=10)  # session state survives a full /tmp
    assert sb.run_shell("pwd; echo $AFTER", timeout=10).stdout == "/tmp\nfull\n"


def test_private_tmp_and_workspace_do_not_reach_the_host(sb):
    marker = f"dsv4-escape-{os.getpid()}"
    r = sb.run_shell(f"echo x > /tmp/{marker} && echo y > /workspace/{marker} && echo ok", timeout=10)
    assert r.stdout == "ok\n"
    assert not Path("/tmp", marker).exists() and not Path("/workspace", marker).exists()


def test_no_capabilities_no_nested_namespaces_no_ptrace(sb):
    script = textwrap.dedent("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for name, nr, args in [("ptrace", 101, (16, 1, 0, 0)), ("mount", 165, (0, 0, 0, 0)),
                               ("unshare", 272, (0x10000000, 0, 0, 0)), ("bpf", 321, (0, 0, 0, 0)),
                               ("x32 getpid", 0x40000000 | 39, (0, 0, 0, 0)), ("clone3", 435, (0, 0, 0, 0)),
                               ("clone newuser", 56, (0x10000000 | 17, 0, 0, 0)),
                               ("getpid", 39, (0, 0, 0, 0))]:
            ctypes.set_errno(0)
            r = libc.syscall(nr, *args)
            print(name, r if r < 0 else "ok", ctypes.get_errno())
    """)
    r = sb.run_shell(f"python3 -c '{script}'; grep CapEff /proc/self/status; unshare -U true", timeout=10)
    assert r.stdout.splitlines()[:8] == [
        "ptrace -1 1", "mount -1 1", "unshare -1 1", "bpf -1 1",  # EPERM
        "x32 getpid -1 1", "clone3 -1 38", "clone newuser -1 1", "getpid ok 0",  # clone3: ENOSYS
    ]
    assert "CapEff:\t0000000000000000" in r.stdout
    assert "unshare failed" in r.stderr or "Operation not permitted" in r.stderr


def test_no_network_egress_by_default(sb, loopback_server):
    code = f"import socket; socket.create_connection(('127.0.0.1', {loopback_server.port}), timeout=5)"
    r = sb.run_shell(f'python3 -c "{code}"', timeout=10)
    assert r.exit_code != 0 and "PermissionError" in r.stderr  # at socket(), not a 5 s timeout
    assert loopback_server.accepted == 0


def test_fork_bomb_is_stopped_by_the_pids_limit(make_sandbox):
    sb = make_sandbox(pids_limit=32)
    script = textwrap.dedent("""
        import os, time
        n = 0
        try:
            while n < 1000:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError as e:
            print(n, e.errno)
    """)
    r = sb.run_shell(f"python3 -c '{script}'", timeout=10)
    forked, errno = map(int, r.stdout.split())
    assert errno == 11 and 16 < forked < 32  # EAGAIN once the sandbox holds 32 processes
    assert len(descendants(sb.backend.proc.pid)) <= 32 + 3  # the limit, plus bwrap's init and the agent
    bomb = sb.run_shell("bomb() { bomb | bomb; }; bomb", timeout=3)
    assert bomb.timed_out
    assert sb.run_shell("echo still here", timeout=10).stdout == "still here\n"


def test_memory_bomb_is_killed(make_sandbox):
    sb = make_sandbox(memory_limit_mb=256)
    r = sb.run_shell("python3 -c 'x = bytearray(1 << 30); print(len(x))'", timeout=20)
    assert r.exit_code != 0 and "MemoryError" in r.stderr
    r = sb.run_shell("python3 -c 'a = []\nwhile True: a.append(bytearray(16 << 20))'", timeout=20)
    assert r.exit_code != 0 and "MemoryError" in r.stderr and not r.timed_out


def test_many_processes_share_one_memory_limit(make_sandbox):
    sb = make_sandbox(memory_limit_mb=200)
    if sb.backend.cgroup is None:
        pytest.skip(f"no per-sandbox memory cgroup here: {sb.backend.enforcement}")
    hog = "python3 -c 'a = bytearray(120 << 20); import time; time.sleep(3)'"
    r = sb.run_shell(f"for i in 1 2 3 4; do {hog} & done; for j in 1 2 3 4; do wait -n; echo $?; done",
                     timeout=30)
    codes = sorted(int(c) for c in r.stdout.split())
    assert 137 in codes and codes.count(0) <= 1  # 4 x 120 MiB cannot all live in 200 MiB: the OOM killer acts
    assert sb.backend.cgroup.peak_memory_bytes() <= 200 << 20
    assert sb.run_shell("echo agent alive", timeout=10).stdout == "agent alive\n"


def test_infinite_loop_is_killed_at_the_timeout_with_its_whole_tree(sb):
    before = descendants(sb.backend.proc.pid)
    stubborn = "setsid sh -c 'trap \"\" TERM HUP; while :; do :; done' &"
    r = sb.run_shell(f"{stubborn} sleep 1000 & while :; do :; done", timeout=1)
    assert r.timed_out and r.exit_code == -9
    assert descendants(sb.backend.proc.pid) == before
    assert sb.run_shell("echo next", timeout=10).stdout == "next\n"


def test_timeout_kill_reaches_processes_that_hide(sb):
    before = descendants(sb.backend.proc.pid)
    r = sb.run_shell("env -i /bin/sh -c 'while :; do :; done' & "  # cleared environment, same process group
                     "setsid sh -c 'sleep 1000' & "  # own session, still tagged
                     "sh -c 'exec >&- 2>&-; setsid env -i sleep 1000' & "  # new session, no tag: a descendant
                     "exec >&- 2>&-; sleep 1000", timeout=1)  # output closed before the end
    assert r.timed_out and r.exit_code == -9
    assert descendants(sb.backend.proc.pid) == before


def test_output_flood_is_truncated(make_sandbox):
    sb = make_sandbox(max_output_bytes=1000)
    r = sb.run_shell("head -c 10000000 /dev/zero | tr '\\0' a; yes err | head -c 5000 >&2", timeout=20)
    assert r.exit_code == 0 and r.truncated and r.stdout_truncated and r.stderr_truncated
    assert r.stdout == "a" * 1000 and len(r.stderr) == 1000
    r = sb.run_shell("yes", timeout=1, max_output_bytes=10)
    assert r.timed_out and r.stdout == "y\n" * 5


def test_no_process_left_after_close(make_sandbox):
    sb = make_sandbox()
    marker = f"{os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    sb.run_shell(f"nohup sleep {marker} >/dev/null 2>&1 & setsid sleep {marker} &", timeout=10)
    assert len(host_processes_with(f"sleep {marker}")) == 2
    sb.close()
    assert host_processes_with(f"sleep {marker}") == []


def test_no_process_left_after_the_parent_is_sigkilled(tmp_path):
    marker = f"{os.getpid() % 1000}.{time.monotonic_ns() % 10**6 + 1}"
    script = textwrap.dedent(f"""
        import sys, time
        from dsv4.sandbox import Sandbox, BackendUnavailable
        try:
            sb = Sandbox.create("process")
        except BackendUnavailable as e:
            print("unavailable", e, flush=True)
            sys.exit(0)
        sb.run_shell("setsid sleep {marker} > /dev/null 2>&1 &", timeout=10)
        print("ready", flush=True)
        time.sleep(1000)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if line.startswith("unavailable"):
        child.wait()
        pytest.skip(line)
    assert line == "ready\n" and host_processes_with(f"sleep {marker}")
    child.kill()
    child.wait()
    deadline = time.monotonic() + 10
    while host_processes_with(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(f"sleep {marker}") == []


def test_sandboxes_cannot_see_each_other(make_sandbox):
    a, b = make_sandbox(), make_sandbox()
    a.run_shell("echo secret > /workspace/a-secret; echo s > /tmp/a-tmp; sleep 999.25 &", timeout=10)
    r = b.run_shell("ls /workspace /tmp; cat /proc/[0-9]*/cmdline | tr '\\0' ' '; "
                    "find / -name 'a-s?cret' 2>/dev/null", timeout=20)
    assert "a-secret" not in r.stdout and "a-tmp" not in r.stdout and "999.25" not in r.stdout
    assert "999.25" in a.run_shell("cat /proc/[0-9]*/cmdline | tr '\\0' ' '", timeout=10).stdout


def test_disk_fill_stops_at_the_workspace_quota(make_sandbox):
    sb = make_sandbox(workspace_mb=8)
    r = sb.run_shell("head -c 20000000 /dev/zero > big; ls -l big | awk '{print $5}'", timeout=20)
    assert "No space left on device" in r.stderr and int(r.stdout.split()[0]) <= 8 << 20
    # the workspace is a tmpfs, or (as root) a mounted image of the quota: nothing on the host disk grows past it
    assert sb.backend.workspace is None or os.path.ismount(sb.backend.workspace)
    r = sb.run_shell("rm big && echo ok > small && cat small", timeout=10)
    assert r.stdout == "ok\n"
