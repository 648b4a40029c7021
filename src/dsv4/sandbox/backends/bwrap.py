"""The `process` backend: the guest agent under bubblewrap with every namespace unshared.

Layout inside: host system directories read-only, `/proc`, a minimal `/dev`, a private size-capped `/tmp`,
the private workspace at `workdir` (an ext4 image of the quota mounted on a host directory owned by the
sandbox's uid, or a tmpfs of the quota), and `/run/dsv4` holding the agent and the allow-list relay sockets.
Nothing else of the host is visible: not /home, /root, /var, or the project checkout.
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from dsv4.sandbox import guest_bundle, overlay, workspace_image
from dsv4.sandbox.backend import GuestBackend
from dsv4.sandbox.cgroups import SandboxCgroup
from dsv4.sandbox.channel import AgentChannel
from dsv4.sandbox.config import ProcessConfig, SandboxSpec, VMConfig
from dsv4.sandbox.errors import BackendUnavailable, CommandTimeout, SandboxClosed, UnsupportedOperation
from dsv4.sandbox.keeper import Keeper
from dsv4.sandbox.limits import Limits
from dsv4.sandbox.logtail import LogTail
from dsv4.sandbox.network import PROXY_VARS, NetworkRules, Relay
from dsv4.sandbox.seccomp import build_filter
from dsv4.sandbox.uids import UidLease, lease_uid

GUEST_DIR = "/run/dsv4"
AGENT = f"{GUEST_DIR}/{guest_bundle.NAME}"
"""The guest agent inside every agent-driven sandbox (bubblewrap, runsc, the VM's 9p share): a zipapp."""
AGENT_DIR = "/run/dsv4-agent"
"""The agent's own scratch space (session state files), apart from the /tmp that commands may fill."""
STATE_PREFIX = "dsv4-sandbox-"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_ENV: dict[str, str] = {}
"""The environment bwrap, runsc and QEMU are started with: empty. `--clearenv` only clears the command's
environment; bwrap's own pid 1 in the sandbox keeps the block it was exec'd with, readable at /proc/1/environ."""


def find_bwrap() -> str:
    """Path of `bwrap`, or `BackendUnavailable` saying why it cannot be used."""
    path = shutil.which("bwrap")
    if path is None:
        raise BackendUnavailable("bubblewrap is not installed (Debian package `bubblewrap`, binary `bwrap`)")
    return path


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackendUnavailable(f"`{name}` is not on PATH")
    return path


def namespace_args(rootful_view: bool = False) -> list[str]:
    """Unshare everything, forbid nested user namespaces, die with the controlling process."""
    uid = "0" if rootful_view else "1000"
    return [
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
        "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session",
        "--hostname", "sandbox", "--uid", uid, "--gid", uid,
        "--clearenv", "--cap-drop", "ALL",
    ]


def system_args(cfg: ProcessConfig) -> list[str]:
    """Bind the host's system directories read-only, recreating top-level symlinks (merged /usr)."""
    args: list[str] = []
    for d in cfg.system_dirs:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in cfg.masked_files:
        if os.path.lexists(f):
            args += ["--ro-bind", "/dev/null", f]
    return args


def private_args(spec: SandboxSpec, state: Path, late: list[str], workspace: Path | None,
                 writable_root: bool = False) -> list[str]:
    """Private /proc, /dev, /tmp, the agent directory and the writable workspace (`workspace`, the mounted
    image, or a tmpfs of the quota when None); the rest read-only. A `writable_root` (an image's private
    overlay) holds the workspace itself and stays writable."""
    size = str(spec.limits.tmpfs_mb << 20)
    return [
        "--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--size", size,
        "--tmpfs", "/tmp", "--tmpfs", "/run", "--ro-bind", str(state / "guest"), GUEST_DIR,
        "--size", str(4 << 20), "--tmpfs", AGENT_DIR,
        *([] if writable_root else workspace_args(spec, workspace)),
        *(a for d in spec.scratch_dirs for a in ("--size", size, "--tmpfs", d)),
        "--chdir", spec.workdir, *late,
        "--remount-ro", "/dev", "--remount-ro", "/run", *([] if writable_root else ["--remount-ro", "/"]),
    ]


def workspace_args(spec: SandboxSpec, workspace: Path | None) -> list[str]:
    if workspace is not None:
        return ["--bind", str(workspace), spec.workdir]
    return ["--size", str(spec.limits.workspace_mb << 20), "--perms", "0755", "--tmpfs", spec.workdir]


def attach_workspace(state: Path, limits: Limits, uid: int, extra_inodes: int = 0) -> tuple[Path | None, str]:
    """(the host workspace directory, now an ext4 image of the quota, or None where the sandbox must use a tmpfs
    of the quota instead; how the quota is kept). `extra_inodes`: on top of the quota's (an overlay's upper
    layer holds one per entry of the image)."""
    inodes = limits.inodes + extra_inodes
    why = workspace_image.attach(state / "workspace", limits.workspace_mb, inodes, uid)
    if why is None:
        return state / "workspace", f"ext4 image of {limits.workspace_mb} MiB, {inodes} inodes"
    return None, f"tmpfs of {limits.workspace_mb} MiB ({why})"


def make_state_dir(cfg: ProcessConfig, uid: int) -> Path:
    """Host directory of one sandbox: `workspace/` (owned by the sandbox uid), `guest/` (agent, sockets)."""
    sweep_orphans(Path(cfg.state_dir or tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix=STATE_PREFIX, dir=cfg.state_dir))
    (root / "owner").write_text(process_identity(os.getpid()))
    root.chmod(0o711)
    (root / "workspace").mkdir(mode=0o700)
    (root / "guest").mkdir(mode=0o755)
    guest_bundle.install(root / "guest")
    if os.geteuid() == 0:
        os.chown(root / "workspace", uid, uid)
    return root


def leased_state_dir(cfg: ProcessConfig | VMConfig) -> tuple[UidLease, Path]:
    """A host uid of the sandbox's own (`dsv4.sandbox.uids`) and its state directory, made for that uid."""
    lease = lease_uid(cfg.run_as_uid)
    try:
        return lease, make_state_dir(cfg, lease.uid)
    except BaseException:
        lease.release()
        raise


def process_identity(pid: int) -> str:
    """`pid starttime`: tells a live owner from a reused pid."""
    return f"{pid} {proc_field(pid, 19)}"


def sweep_orphans(state_root: Path) -> None:
    """Delete state directories whose owner died without closing them (e.g. killed with SIGKILL)."""
    for d in state_root.glob(f"{STATE_PREFIX}*"):
        try:
            pid = int((d / "owner").read_text().split()[0])
            alive = process_identity(pid) == (d / "owner").read_text()
        except (OSError, ValueError, IndexError):
            # No owner: being made this instant, or half removed (say by an older dsv4 that left the workspace
            # image mounted); only the latter is a minute old.
            try:
                alive = time.time() - d.stat().st_mtime < 60
            except OSError:
                continue
        # else its last processes are still dying, or its image is still mounted: the next sweep
        if not alive and remove_cgroups(d) and overlay.unmount(d / overlay.ROOT_NAME) and \
                workspace_image.detach(d / "workspace"):
            shutil.rmtree(d, ignore_errors=True)


def remove_cgroups(state: Path) -> bool:
    """rmdir the cgroup directories listed in `state/cgroups` (ours, or runsc's); True once none is left."""
    try:
        patterns = (state / "cgroups").read_text().split()
    except OSError:
        return True
    left = False
    for path in (p for pattern in patterns for p in glob.glob(pattern)):
        try:
            os.rmdir(path)
        except OSError:
            left = True
    return not left


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and proc_field(int(name), 1) == str(pid):
            found.append(int(name))
    return found


def proc_field(pid: int, index: int) -> str | None:
    """Field `index` after the command name of /proc/PID/stat (0 = state, 1 = ppid); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[index]
    except (OSError, IndexError):
        return None


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL a pid-namespace init and wait until it is gone: the kernel reaps its whole namespace first."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while proc_field(pid, 0) not in (None, "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.002)


class BwrapBackend(GuestBackend):
    """One bubblewrap process per sandbox; the agent inside runs every command."""

    def __init__(self, spec: SandboxSpec, argv_root: list[str] | None = None):
        cfg = spec.backend
        assert isinstance(cfg, ProcessConfig)
        self.spec, self.cfg = spec, cfg
        self.max_output_bytes = spec.limits.max_output_bytes
        self.uid_lease, self.state = leased_state_dir(cfg)
        self.uid = self.uid_lease.uid
        self.workspace: Path | None = None
        self.workspace_store = ""
        """How the workspace quota is kept (an ext4 image on the host, or a tmpfs and why)."""
        self.relay: Relay | None = None
        self.proc: subprocess.Popen | None = None
        self.log: LogTail | None = None
        self._host_fds: tuple[int, ...] = ()
        self.init_pid: int | None = None
        self.cgroup: SandboxCgroup | None = None
        self.enforcement = "rlimits only"
        """How memory and pids limits are enforced for the whole sandbox (cgroups when available)."""
        self.agent_argv = [cfg.python, "-I", "-S"]
        self._keeper = Keeper()
        self.late_binds: list[str] = []
        """Mounts made after /run exists (under /run/dsv4)."""
        try:
            self.workspace, self.workspace_store = self._attach_workspace()
            self._start(argv_root if argv_root is not None else system_args(cfg))
        except BaseException:
            self.close()
            raise

    def _attach_workspace(self) -> tuple[Path | None, str]:
        return attach_workspace(self.state, self.spec.limits, self.uid)

    def _start(self, root_args: list[str], writable_root: bool = False) -> None:
        bwrap = find_bwrap()
        if self.spec.network_rules.mode != "none":  # a relay, even if empty, so the rules can change later
            self.relay = Relay(self.spec.network_rules, self.state / "guest" / "net")
        limits = self.spec.limits
        self.cgroup, self.enforcement = SandboxCgroup.create(limits.memory_limit_mb << 20, limits.pids_limit)
        if self.cgroup is not None:  # for the sweep, should this process die before close()
            (self.state / "cgroups").write_text("".join(f"{d}\n" for d in self.cgroup.dirs))
        # Affinity is set outside: the seccomp filter forbids changing it from inside.
        cpus = ",".join(map(str, self.spec.limits.cpu_set()))
        argv = [find_tool("taskset"), "-c", cpus, bwrap, *namespace_args(rootful_view=writable_root), *root_args,
                *private_args(self.spec, self.state, self.late_binds, self.workspace, writable_root)]
        # The channel is on fds other than 0-2: bubblewrap's pid 1 (dumpable, the commands' uid) keeps only its
        # stdio, which is /dev/null and a stderr kept as a bounded tail in host memory (no host file to fill).
        to_agent, from_agent = os.pipe(), os.pipe()
        guest_fds = (to_agent[0], from_agent[1])
        self._host_fds = (from_agent[0], to_agent[1])
        pass_fds: tuple[int, ...] = guest_fds
        if self.cfg.seccomp:
            fd = self._seccomp_fd()
            argv += ["--seccomp", str(fd)]
            pass_fds += (fd,)
        argv += [*self.agent_argv, AGENT, f"--fds={guest_fds[0]},{guest_fds[1]}"]
        as_user = {"user": self.uid, "group": self.uid, "extra_groups": []} if os.geteuid() == 0 else {}
        self.log = LogTail()
        try:
            self.proc = self._keeper.spawn(argv, self.cgroup, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=self.log.fd, pass_fds=pass_fds, env=HOST_ENV, **as_user)
        finally:
            self.log.close_writer()
            for fd in pass_fds:
                os.close(fd)
        self.channel = AgentChannel(*self._host_fds, self._why_dead)
        self._handshake()
        self.init_pid = next(iter(child_pids(self.proc.pid)), None)

    def _seccomp_fd(self) -> int:
        path = self.state / "seccomp.bpf"
        path.write_bytes(build_filter(deny_inet=self.spec.network_rules.mode == "none"))
        return os.open(path, os.O_RDONLY)

    def _handshake(self) -> None:
        env = {"PATH": PATH, "HOME": self.spec.workdir, "LANG": "C.UTF-8", "TERM": "dumb",
               **(self.relay.proxy_env() if self.relay else {}), **self.spec.env}
        init = {"cwd": self.spec.workdir, "env": env, "limits": self.spec.limits.guest(),
                "private_dir": AGENT_DIR}
        try:
            self.channel.handshake(init, self.cfg.start_timeout_s)
        except (SandboxClosed, CommandTimeout) as e:
            raise BackendUnavailable(f"bubblewrap sandbox did not start: {self._why_dead()}") from e
        if self.relay is not None:
            self._forward([(*key, path) for key, (path, _) in self.relay.sockets.items()], [])

    def _forward(self, added: list[tuple[str, int, Path]], removed: list[tuple[str, int]]) -> None:
        for host, port in removed:
            self.channel.request("unforward", 10, host=host, port=port)
        for host, port, path in added:
            unix_path = f"{GUEST_DIR}/net/{path.name}"
            self.channel.request("forward", 10, host=host, port=port, unix_path=unix_path)

    def update_network(self, rules: NetworkRules) -> None:
        """Change the allow-list of a running sandbox (not one created with `none`, whose filter is fixed)."""
        if self.relay is None:
            raise UnsupportedOperation("a sandbox created with network_rules='none' keeps them: its seccomp "
                                       "filter refuses IP sockets for good")
        self._forward(*self.relay.update(rules))
        _, env = self.session()
        env = {k: v for k, v in env.items() if k not in PROXY_VARS}
        self.session(env=dict(env, **self.relay.proxy_env()))

    def _why_dead(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        if self.log is not None:
            log = self.log.text().strip()[-2000:]
        else:  # runsc's own stderr, out of the guest's reach
            try:
                log = (self.state / "agent.log").read_text(errors="replace").strip()[-2000:]
            except OSError:
                log = ""
        return f"bwrap exit status={code}, stderr={log!r}"

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Kill bwrap: its pid-1 child dies with it and takes every process in the sandbox along."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            if self.init_pid is not None:
                kill_and_wait(self.init_pid)
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
        for fd in self._host_fds:
            os.close(fd)
        self._host_fds = ()
        self._keeper.release()
        if self.relay is not None:
            self.relay.close()
        if self.cgroup is not None:
            self.cgroup.remove()
        # else the sweep removes it (never files in a mount)
        if overlay.unmount(self.state / overlay.ROOT_NAME) and workspace_image.detach(self.state / "workspace"):
            shutil.rmtree(self.state, ignore_errors=True)
        self.uid_lease.release()  # every process of the uid is gone
