"""The `vm` backend: QEMU booting the host's kernel with a tiny initramfs whose init starts the guest agent.

The initramfs holds busybox and the virtio/9p modules; the host's `/usr` (read-only), the agent directory
(read-only) and the workspace reach the guest over 9p, and the agent is the host's Python started through the
host's loader, as in the container backend. The agent talks over the second serial port. QEMU runs as the
sandbox's own unprivileged uid (so 9p cannot create root-owned files on the host), uses KVM when that uid can open
`/dev/kvm` and it works, TCG otherwise, has no network device, and confines itself with its own seccomp
filter (`-sandbox on`).
"""

import glob
import os
import shutil
import subprocess
from pathlib import Path

from dsv4.sandbox import workspace_image
from dsv4.sandbox.backend import GuestBackend
from dsv4.sandbox.backends.bwrap import (
    AGENT,
    AGENT_DIR,
    HOST_ENV,
    PATH,
    attach_workspace,
    find_tool,
    leased_state_dir,
)
from dsv4.sandbox.backends.container import injected_python
from dsv4.sandbox.channel import AgentChannel
from dsv4.sandbox.config import SandboxSpec, VMConfig
from dsv4.sandbox.errors import BackendUnavailable, CommandTimeout, SandboxClosed
from dsv4.sandbox.initramfs import build_initramfs
from dsv4.sandbox.keeper import Keeper

QEMU_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
"""QEMU's own seccomp filter: a guest that breaks into QEMU still cannot exec, fork, change uid or use obsolete
or scheduling calls."""
SHARES = (("hostusr", "/run/dsv4-host/usr", True), ("guest", "/run/dsv4", True), ("workspace", None, False))


def find_kernel(cfg: VMConfig) -> str:
    if cfg.kernel is not None:
        if not os.access(cfg.kernel, os.R_OK):
            raise BackendUnavailable(f"kernel={str(cfg.kernel)!r} does not exist or is not readable")
        return str(cfg.kernel)
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise BackendUnavailable("no kernel: /boot has no vmlinuz-* (Debian package linux-image-amd64)")
    return kernels[-1]


def init_script(spec: SandboxSpec, agent_argv: list[str], host_workspace: bool = True) -> str:
    """The guest's /init; the workspace is the host's (the quota's ext4 image, over 9p) or, without
    `host_workspace`, a guest tmpfs of the quota."""
    mounts = [f"mkdir -p {spec.workdir if d is None else d}\n"
              f"mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144{',ro' if ro else ''} "
              f"{tag} {spec.workdir if d is None else d}" for tag, d, ro in SHARES]
    if not host_workspace:
        size, inodes = spec.limits.workspace_mb, spec.limits.inodes
        mounts[-1] = f"mkdir -p {spec.workdir}\nmount -t tmpfs -o size={size}m,nr_inodes={inodes} tmpfs {spec.workdir}"
    mounts += [f"mkdir -p {d}; mount -t tmpfs -o size={spec.limits.tmpfs_mb}m tmpfs {d}" for d in spec.scratch_dirs]
    lo = "ip link set lo up\n" if spec.network_rules.mode == "loopback" else ""
    return "\n".join([
        "#!/bin/busybox sh", "/bin/busybox --install -s /bin", "export PATH=/bin", "hostname sandbox",
        "mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev",
        f"mount -t tmpfs -o size={spec.limits.tmpfs_mb}m tmpfs /tmp; mount -t tmpfs tmpfs /run",
        f"mkdir -p {AGENT_DIR}; mount -t tmpfs -o size=4m tmpfs {AGENT_DIR}",
        "for m in $(cat /modules.order); do insmod /lib/modules/$m; done", *mounts, lo,
        "stty -F /dev/ttyS1 raw -echo", f"cd {spec.workdir}",
        f"{' '.join(agent_argv)} {AGENT} --announce < /dev/ttyS1 > /dev/ttyS1 2> /dev/ttyS0",
        "poweroff -f", "",
    ])


def kvm_groups(uid: int) -> list[int] | None:
    """Supplementary groups that let QEMU, running as `uid`, open /dev/kvm read-write; None if it cannot."""
    try:
        st = os.stat("/dev/kvm")
    except OSError:
        return None
    if uid == 0 or (st.st_uid == uid and st.st_mode & 0o600 == 0o600) or st.st_mode & 0o006 == 0o006:
        return []
    if st.st_mode & 0o060 == 0o060 and (st.st_gid == uid or os.geteuid() == 0 or st.st_gid in os.getgroups()):
        return [st.st_gid]  # e.g. Debian's `kvm` group, granted to QEMU alone
    return None


def accelerators(cfg: VMConfig, uid: int) -> list[str]:
    """KVM first when the QEMU user may open /dev/kvm (it can still fail, e.g. nested), then TCG."""
    if cfg.accel != "auto":
        return [cfg.accel]
    return ["kvm", "tcg"] if kvm_groups(uid) is not None else ["tcg"]


class VMBackend(GuestBackend):
    def __init__(self, spec: SandboxSpec):
        cfg = spec.backend
        assert isinstance(cfg, VMConfig)
        if spec.network_rules.mode in ("allow", "all"):
            raise BackendUnavailable("network_rules 'allow' and 'all' are not offered by the vm backend (no NIC)")
        self.spec, self.cfg = spec, cfg
        self.qemu = find_tool("qemu-system-x86_64")
        self.kernel = find_kernel(cfg)
        self.max_output_bytes = spec.limits.max_output_bytes
        self.uid_lease, self.state = leased_state_dir(cfg)
        self.uid = self.uid_lease.uid
        self.workspace: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._keeper = Keeper()
        try:
            self.workspace, self.workspace_store = attach_workspace(self.state, spec.limits, self.uid)
            self._boot()
        except BaseException:
            self.close()
            raise

    def _boot(self) -> None:
        initrd = self.state / "initrd.cpio"
        script = init_script(self.spec, injected_python(self.cfg.python), self.workspace is not None)
        build_initramfs(initrd, self.kernel, script)
        reasons = []
        for accel in accelerators(self.cfg, self.uid):
            try:
                return self._start(accel, initrd)
            except BackendUnavailable as e:
                reasons.append(f"{accel}: {e}")
                self._stop()
        raise BackendUnavailable("QEMU did not boot the guest agent; " + "; ".join(reasons))

    def _start(self, accel: str, initrd) -> None:
        cpus = len(self.spec.limits.cpu_set())
        argv = [find_tool("setpriv"), "--pdeathsig", "KILL", "--", self.qemu, "-nodefaults",
                "-no-user-config",
                "-display", "none", "-nic", "none", "-no-reboot", "-accel", accel, "-cpu", "max",
                "-sandbox", QEMU_SANDBOX,
                "-m", str(max(256, self.spec.limits.memory_limit_mb)), "-smp", str(cpus),
                "-kernel", self.kernel, "-initrd", str(initrd),
                "-append", "console=ttyS0 panic=-1 quiet rdinit=/init",
                "-serial", f"file:{self.state / 'console.log'}", "-serial", "stdio"]
        paths = {"hostusr": "/usr", "guest": str(self.state / "guest"), "workspace": str(self.state / "workspace")}
        for tag, _, ro in SHARES:
            argv += ["-virtfs", f"local,path={paths[tag]},mount_tag={tag},security_model=none"
                     + (",readonly=on" if ro else "")]
        groups = (kvm_groups(self.uid) or []) if accel == "kvm" else []
        as_user = {"user": self.uid, "group": self.uid, "extra_groups": groups} if os.geteuid() == 0 else {}
        console = self.state / "console.log"
        console.write_bytes(b"")
        if os.geteuid() == 0:
            os.chown(console, self.uid, self.uid)
        with open(self.state / "qemu.log", "wb") as log:
            self.proc = self._keeper.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                           env=HOST_ENV, **as_user)
        self.channel = AgentChannel(self.proc.stdout.fileno(), self.proc.stdin.fileno(), self._why_dead)
        env = {"PATH": PATH, "HOME": self.spec.workdir, "LANG": "C.UTF-8", "TERM": "dumb", **self.spec.env}
        limits = dict(self.spec.limits.guest(), pids=None)  # the guest is root; the VM itself is the bound
        try:
            init = {"cwd": self.spec.workdir, "env": env, "limits": limits, "private_dir": AGENT_DIR}
            self.channel.handshake(init, self.cfg.boot_timeout_s, wait_ready=True)
        except (SandboxClosed, CommandTimeout) as e:
            raise BackendUnavailable(str(e)) from e

    def _why_dead(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        tails = []
        for name in ("qemu.log", "console.log"):
            try:
                tails.append((self.state / name).read_text(errors="replace").strip()[-1200:])
            except OSError:
                tails.append("")
        return f"qemu exit status={code}, stderr={tails[0]!r}, console tail={tails[1]!r}"

    def _stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.proc = None

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        self._stop()
        self._keeper.release()
        if workspace_image.detach(self.state / "workspace"):  # else the sweep removes it (never files in a mount)
            shutil.rmtree(self.state, ignore_errors=True)
        self.uid_lease.release()
