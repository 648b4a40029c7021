"""Attacks on the isolation layer (issue #16), one test each, on every backend that runs here.

Each attack worked on the sandbox before its fix: the host environment read from /proc/1/environ, the host disk
filled through the workspace, syscalls a denylist did not name, one host uid for every sandbox, QEMU without
its own seccomp sandbox, the allow-list proxy following a name to a loopback or metadata address.
"""

import fcntl
import os
import socket
import textwrap
import time

import pytest

from dsv4.cli import main
from dsv4.sandbox import ContainerConfig
from dsv4.server import create_app
from dsv4.server.background import serving
from tests.encoding.test_parse_strategies import render_calls
from tests.server.conftest import ScriptedBackend, real_tokenizer  # noqa: F401 - fixture

from .procs import descendants
from .test_container import busybox_rootfs  # noqa: F401 - the shared image fixture
from .test_network import PROXY_CONNECT

SECRET = "dsv4-escape-host-secret-7f3a"
BACKENDS = ["process", "container", "runsc"]  # the vm backend: test_vm_isolation, one boot for every check


@pytest.fixture
def box(request, make_sandbox):
    """`make(**kwargs)`: a sandbox of the parametrized backend (skipped with the reason where unavailable; the
    container backends run a busybox image)."""

    def make(**kwargs):
        name = request.param
        if name in ("container", "runsc"):
            rootfs = request.getfixturevalue("busybox_rootfs")
            runtime = "runsc" if name == "runsc" else "bwrap"
            return make_sandbox(ContainerConfig(image=rootfs, runtime=runtime), **kwargs)
        return make_sandbox(name, **kwargs)

    return make


def every_backend(test):
    return pytest.mark.parametrize("box", BACKENDS, indirect=True)(test)


@every_backend
def test_host_environment_is_not_readable(box, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    sb = box()
    r = sb.run_shell("for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; echo done", timeout=60)
    assert r.stdout.endswith("done\n")
    assert SECRET not in r.stdout and "OPENAI_API_KEY" not in r.stdout



@pytest.mark.parametrize("box", ["process", "container"], indirect=True)
def test_bubblewraps_pid_1_holds_nothing_of_the_hosts(box):
    """pid 1 is bubblewrap's init, dumpable and of the commands' uid: it must hold neither the control channel
    nor a host file (it had the channel's pipes as stdin / stdout and `agent.log` as stderr)."""
    r = box().run_shell("for f in /proc/1/fd/*; do readlink $f; done", timeout=10)
    held = r.stdout.split()
    assert held[:2] == ["/dev/null", "/dev/null"] and all(not h.startswith("/") for h in held[2:]), held


# ---- the host disk: a workspace quota by default, bytes and inodes ------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the quota's ext4 image is mounted by root; otherwise "
                                "the workspace is a tmpfs, whose inodes bubblewrap cannot cap")


@every_backend
@needs_root
def test_workspace_has_a_quota_by_default(box):
    r = box().run_shell("df -k /workspace | tail -1; df -i /workspace | tail -1", timeout=60)
    size_kb, inodes = (int(line.split()[1]) for line in r.stdout.splitlines())
    assert 0.9 * (1 << 20) < size_kb <= 1 << 20 and inodes == 65536  # 1024 MiB and one inode per 16 KiB
    r = box(workspace_mb=32).run_shell("for i in 1 2 3 4; do head -c 10000000 /dev/zero > f$i; done; "
                                       "df -k /workspace | tail -1", timeout=60)
    size_kb, used_kb, free_kb = (int(x) for x in r.stdout.split()[1:4])
    assert r.stderr and used_kb <= size_kb and free_kb < 2048  # a write failed (ENOSPC) at the quota, not past it


@every_backend
@needs_root
def test_workspace_inodes_are_capped(box):
    sb = box(workspace_mb=16)  # 1024 inodes: one per 16 KiB
    r = sb.run_shell("i=0; while touch f$i 2>/dev/null; do i=$((i+1)); [ $i -gt 5000 ] && break; done; echo $i",
                     timeout=120)
    assert 900 < int(r.stdout) <= 1024


def test_without_a_loop_mount_the_workspace_is_a_tmpfs_of_the_quota(make_sandbox, monkeypatch):
    from dsv4.sandbox import workspace_image

    monkeypatch.setattr(workspace_image, "attach", lambda *args: "no loop device here")  # as when not root
    sb = make_sandbox(workspace_mb=32)
    assert sb.backend.workspace is None and "no loop device here" in sb.backend.workspace_store
    r = sb.run_shell("df -k /workspace | tail -1; head -c 40000000 /dev/zero > f", timeout=30)
    assert int(r.stdout.split()[1]) == 32 << 10 and "No space left on device" in r.stderr



@needs_root
def test_a_half_removed_state_directory_leaves_no_mount_behind(tmp_path):
    from dsv4.sandbox import workspace_image
    from dsv4.sandbox.backends.bwrap import STATE_PREFIX, sweep_orphans

    state = tmp_path / f"{STATE_PREFIX}half-removed"  # its owner file gone, its workspace image still mounted
    (state / "workspace").mkdir(parents=True)
    assert workspace_image.attach(state / "workspace", 8, 64, 0) is None
    os.utime(state, (time.time() - 120,) * 2)
    sweep_orphans(tmp_path)
    assert not os.path.ismount(state / "workspace") and not state.exists()


# ---- network: the allow-list proxy follows names only to public addresses ----------------------------------

@pytest.fixture
def resolver(monkeypatch):
    """Host names made to resolve (for the proxy, which runs in this process) to chosen addresses."""
    names: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return real(names[host], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def test_allowed_name_that_resolves_to_loopback_is_refused(make_sandbox, loopback_server, resolver):
    resolver["rebind.example"] = "127.0.0.1"  # an allowed name whose DNS answer points at the host itself
    sb = make_sandbox(network_rules=[f"rebind.example:{loopback_server.port}"])
    r = sb.run_shell(f"{PROXY_CONNECT} rebind.example:{loopback_server.port}", timeout=20)
    assert r.stdout.splitlines()[0] == "HTTP/1.1 403 Forbidden"
    assert loopback_server.accepted == 0


def test_loopback_allowed_by_ip_or_by_localhost_still_works(make_sandbox, loopback_server):
    sb = make_sandbox(network_rules=f"localhost:{loopback_server.port},127.0.0.1:{loopback_server.port}")
    r = sb.run_shell(f"{PROXY_CONNECT} localhost:{loopback_server.port}", timeout=20)
    assert r.stdout == "HTTP/1.1 200 Connection established\npong\n" and loopback_server.accepted == 1


def test_names_are_vetted_to_public_addresses(resolver):
    from dsv4.sandbox.network import vetted_addresses

    for name, address in [("metadata.example", "169.254.169.254"), ("alibaba-metadata.example", "100.100.100.200"),
                          ("v6-metadata.example", "fd00:ec2::254"), ("link.example", "fe80::1"),
                          ("private.example", "10.0.0.7"), ("zero.example", "0.0.0.0"),
                          ("mapped.example", "::ffff:127.0.0.1"), ("public.example", "8.8.8.8")]:
        resolver[name] = address
    for name in ["metadata.example", "alibaba-metadata.example", "v6-metadata.example", "link.example",
                 "private.example", "zero.example", "mapped.example"]:
        assert vetted_addresses(name, 80, listed=True) == [], name
    assert [a[1][0] for a in vetted_addresses("public.example", 80, listed=True)] == ["8.8.8.8"]
    # an IP literal is reached as given only when the user listed it; `all` mode never reaches a private one
    assert vetted_addresses("169.254.169.254", 80, listed=True) == [(socket.AF_INET, ("169.254.169.254", 80))]
    assert vetted_addresses("169.254.169.254", 80, listed=False) == []
    assert vetted_addresses("localhost", 80, listed=False) == []


def test_network_all_reaches_no_host_address(make_sandbox, loopback_server, resolver):
    resolver["rebind.example"] = "127.0.0.1"
    sb = make_sandbox(network_rules="all")
    r = sb.run_shell(f"echo $HTTPS_PROXY; for d in localhost 127.0.0.1 rebind.example; do "
                     f"{PROXY_CONNECT} $d:{loopback_server.port} | head -1; done", timeout=30)
    assert r.stdout.splitlines() == ["http://127.0.0.1:3128"] + ["HTTP/1.1 403 Forbidden"] * 3
    assert loopback_server.accepted == 0


# ---- `dsv4 agent --network`: the forms its --help documents ------------------------------------------------

@pytest.mark.parametrize("network", ["all", "127.0.0.1:8999,pypi.org:443"])
def test_agent_command_takes_the_documented_network_forms(network, real_tokenizer, make_sandbox, tmp_path,  # noqa: F811
                                                          capsys):
    make_sandbox("process")  # skips where bubblewrap cannot run at all
    scripts = ["</think>" + render_calls([("bash", {"command": "echo proxy=$HTTPS_PROXY"})]), "</think>done."]
    with serving(create_app(ScriptedBackend(real_tokenizer, scripts))) as url:
        rc = main(["agent", "Show the proxy.", "--endpoint", f"{url}/v1", "--network", network,
                   "--trajectory", str(tmp_path / "t.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "proxy=http://127.0.0.1:3128" in captured.out


def test_sandbox_run_takes_the_same_network_forms(make_sandbox, capsys):
    make_sandbox("process")  # skips where bubblewrap cannot run at all
    assert main(["sandbox", "run", "--network", "all", "echo $HTTPS_PROXY"]) == 0
    assert capsys.readouterr().out == "http://127.0.0.1:3128\n"
    assert main(["sandbox", "run", "--network", "example.org", "true"]) == 2
    assert "network rule 'example.org': expected none, loopback, all, or host:port" in capsys.readouterr().err


# ---- seccomp: an allow-list ---------------------------------------------------------------------------------

SYSCALLS = textwrap.dedent("""
    import ctypes, os, socket
    libc = ctypes.CDLL(None, use_errno=True)
    def call(nr, *args):
        ctypes.set_errno(0)
        r = libc.syscall(nr, *(ctypes.c_long(a) for a in args))
        return "ok" if r >= 0 else os.strerror(ctypes.get_errno())
    me = os.getpid()
    print("pidfd_open", call(434, me, 0))
    print("pidfd_getfd", call(438, 3, 1, 0))
    print("process_vm_readv", call(310, me, 0, 0, 0, 0, 0))
    print("ptrace", call(101, 16, os.getppid(), 0, 0))
    print("modify_ldt", call(154, 1, 0, 0))
    print("kcmp", call(312, me, me, 0, 0, 0))
    print("listmount (a call the list does not name)", call(458, 0, 0, 0, 0))
    for name, family, kind in [("AF_NETLINK", 16, socket.SOCK_RAW), ("AF_VSOCK", 40, socket.SOCK_STREAM),
                               ("AF_ALG", 38, socket.SOCK_SEQPACKET), ("AF_UNIX", 1, socket.SOCK_STREAM)]:
        try:
            socket.socket(family, kind).close()
            print(name, "ok")
        except OSError as e:
            print(name, os.strerror(e.errno))
""")


def test_seccomp_is_an_allow_list(sb):
    r = sb.run_shell(f"python3 -c '{SYSCALLS}'", timeout=20)
    assert r.stdout.splitlines() == [
        "pidfd_open Operation not permitted", "pidfd_getfd Operation not permitted",
        "process_vm_readv Operation not permitted", "ptrace Operation not permitted",
        "modify_ldt Operation not permitted", "kcmp Operation not permitted",
        "listmount (a call the list does not name) Function not implemented",
        "AF_NETLINK Address family not supported by protocol", "AF_VSOCK Address family not supported by protocol",
        "AF_ALG Address family not supported by protocol", "AF_UNIX ok",
    ], r.stderr


ORDINARY = r"""
set -e
cd "$(mktemp -d)"
seq 1 2000 | sort -rn | awk '{s += $1} END {print s}' | sed 's/^/sum /' > sum.txt
find / -maxdepth 2 -name 'sh' 2>/dev/null | head -1 > /dev/null
tar czf a.tgz sum.txt && mkdir x && tar xzf a.tgz -C x && cmp sum.txt x/sum.txt
python3 - <<'PY'
import asyncio, concurrent.futures, hashlib, mmap, multiprocessing, sqlite3, subprocess, tempfile, threading
with multiprocessing.Pool(2) as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    assert sum(ex.map(lambda i: i, range(10))) == 45
assert subprocess.run(["true"]).returncode == 0
async def echo():
    r, w = await asyncio.open_connection(sock=__import__("socket").socketpair()[0])
    w.close()
asyncio.run(echo())
db = sqlite3.connect(tempfile.mktemp()); db.execute("create table t(x)"); db.commit()
with tempfile.TemporaryFile() as f:
    f.write(b"x" * 4096); f.flush(); mmap.mmap(f.fileno(), 4096).close()
hashlib.sha256(b"x").hexdigest()
print("python ok")
PY
if command -v git >/dev/null; then
  git init -q repo && cd repo && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m m
  git log --oneline | wc -l && cd ..
fi
if command -v cc >/dev/null; then
  printf '#include <pthread.h>\n#include <stdio.h>\nvoid *f(void *a) { return a; }\n'\
'int main(void) { pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0); puts("c ok"); return 0; }\n' > m.c
  printf 'm: m.c\n\tcc -O2 -pthread -o m m.c\n' > Makefile && make -s && ./m
fi
if command -v g++ >/dev/null; then
  printf '#include <iostream>\n#include <thread>\n'\
'int main() { std::thread t([]{}); t.join(); std::cout << "c++ ok\\n"; }\n' > m.cc
  g++ -O1 -pthread -o mm m.cc && ./mm
fi
if command -v perl >/dev/null; then perl -e 'print "perl ok\n"'; fi
echo all ok
"""


def test_ordinary_commands_run_under_the_allow_list(make_sandbox):
    sb = make_sandbox(memory_limit_mb=2048)
    r = sb.run_shell(ORDINARY, timeout=240)
    assert r.exit_code == 0 and r.stdout.endswith("all ok\n"), (r.stdout, r.stderr)
    assert "python ok" in r.stdout


# ---- host uids: one per sandbox -------------------------------------------------------------------------------

def host_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run sandboxes as uids of their own")
def test_each_sandbox_runs_as_a_host_uid_of_its_own(make_sandbox):
    a, b = make_sandbox(), make_sandbox()
    uids = {host_uid(p) for sb in (a, b) for p in [sb.backend.proc.pid, *descendants(sb.backend.proc.pid)]}
    assert len(uids) == 2 and 0 not in uids and 65534 not in uids
    # the workspace on the host belongs to its sandbox's uid alone
    assert {os.stat(sb.backend.state / "workspace").st_uid for sb in (a, b)} == uids
    # the uid is leased while its sandbox lives, and back in the pool once it is closed
    from dsv4.sandbox.uids import LEASE_DIR

    lease_file = LEASE_DIR / str(a.backend.uid)
    assert not lockable(lease_file)
    a.close()
    assert lockable(lease_file)


def lockable(path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# ---- the vm backend: one boot (about 2 minutes under TCG, where this machine's KVM does not start a guest) ---

@pytest.mark.slow
def test_vm_isolation(make_sandbox, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    vm = make_sandbox("vm", memory_limit_mb=512)
    r = vm.run_shell("for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; echo done", timeout=60)
    assert r.stdout.endswith("done\n") and SECRET not in r.stdout
    qemu = vm.backend.proc.pid
    with open(f"/proc/{qemu}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    assert status["Seccomp"].strip() == "2"  # QEMU's own filter (-sandbox on)
    assert SECRET.encode() not in open(f"/proc/{qemu}/environ", "rb").read()
    if os.geteuid() == 0:
        assert host_uid(qemu) not in (0, 65534)
    r = vm.run_shell("df -k /workspace | tail -1; df -i /workspace | tail -1", timeout=60)
    size_kb, inodes = (int(line.split()[1]) for line in r.stdout.splitlines())
    assert 0.9 * (1 << 20) < size_kb <= 1 << 20 and inodes == 65536  # the quota's image (or guest tmpfs)

