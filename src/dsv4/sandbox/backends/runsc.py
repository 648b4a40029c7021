"""The `container` backend's gVisor runtime: the same image and agent, under `runsc run` (an OCI bundle).

gVisor's user-space kernel is the isolation boundary here, so no seccomp filter is installed; `--network=none`
leaves only the sandbox's own loopback, and the allow-list relay is not offered.
"""

import json
import os
import subprocess
import uuid

from dsv4.sandbox.backends.bwrap import AGENT, AGENT_DIR, GUEST_DIR, HOST_ENV, PATH, BwrapBackend, find_tool
from dsv4.sandbox.backends.container import HOST_DIR, injected_python
from dsv4.sandbox.channel import AgentChannel
from dsv4.sandbox.config import ContainerConfig, SandboxSpec
from dsv4.sandbox.errors import BackendUnavailable, UnsupportedOperation
from dsv4.sandbox.image import materialize


def bind(src: str, dst: str, readonly: bool) -> dict:
    options = ["rbind", "ro" if readonly else "rw"]
    return {"destination": dst, "type": "bind", "source": src, "options": options}


class RunscBackend(BwrapBackend):
    """One `runsc run` per sandbox; `close()` kills and deletes the container."""

    def __init__(self, spec: SandboxSpec):
        assert isinstance(spec.backend, ContainerConfig)
        if spec.network_rules.mode in ("allow", "all"):
            raise BackendUnavailable("runsc here cannot reach host unix sockets, so the network_rules relay "
                                     "('allow' and 'all') is not offered under runtime='runsc'")
        if os.geteuid() != 0:
            raise BackendUnavailable("runsc (Debian 0.0~20221219) needs root here; rootless mode is not "
                                     "wired up")
        self.container_id = f"dsv4-{uuid.uuid4().hex[:12]}"
        super().__init__(spec, argv_root=[])

    def _start(self, root_args: list[str]) -> None:
        runsc = find_tool("runsc")
        scratch = self.state / "image"
        scratch.mkdir()
        rootfs = materialize(self.cfg.image, scratch)
        # runsc makes one cgroup per controller named after the container; a killed owner cannot remove them,
        # so the next sandbox's sweep does (see bwrap.sweep_orphans).
        (self.state / "cgroups").write_text(f"/sys/fs/cgroup/*/{self.container_id}\n"
                                            f"/sys/fs/cgroup/{self.container_id}\n")
        bundle = self.state / "bundle"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(self._oci_config(rootfs)))
        self.runsc = [runsc, "--root", str(self.state / "runsc"), "--network=none"]
        log = open(self.state / "agent.log", "wb")
        try:
            # pdeathsig on `runsc run`; its attached sandbox and gofer die with it.
            argv = [find_tool("setpriv"), "--pdeathsig", "KILL", "--", *self.runsc, "run", "--bundle",
                    str(bundle), self.container_id]
            self.proc = self._keeper.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                           env=HOST_ENV)
        finally:
            log.close()
        self.channel = AgentChannel(self.proc.stdout.fileno(), self.proc.stdin.fileno(), self._why_dead)
        self._handshake()

    def _oci_config(self, rootfs) -> dict:
        mounts = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": [f"size={self.spec.limits.tmpfs_mb}m"]},
            {"destination": AGENT_DIR, "type": "tmpfs", "source": "tmpfs",
             "options": ["size=4m", "mode=0777"]},
            bind(str(self.state / "guest"), GUEST_DIR, True),
            bind("/usr", f"{HOST_DIR}/usr", True),
        ]
        if self.workspace is None:
            mounts.append({"destination": self.spec.workdir, "type": "tmpfs", "source": "tmpfs",
                           "options": [f"size={self.spec.limits.workspace_mb}m", "mode=0777"]})
        else:
            mounts.append(bind(str(self.workspace), self.spec.workdir, False))
        process = {
            "terminal": False, "user": {"uid": self.uid, "gid": self.uid}, "cwd": self.spec.workdir,
            "args": [*injected_python(self.cfg.python), AGENT], "env": [f"PATH={PATH}"],
            "noNewPrivileges": True,
        }
        namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
        return {"ociVersion": "1.0.0", "process": process, "root": {"path": str(rootfs), "readonly": True},
                "hostname": "sandbox", "mounts": mounts, "linux": {"namespaces": namespaces}}

    def update_network(self, rules) -> None:
        raise UnsupportedOperation("runtime='runsc' sandboxes keep the network rules they were created with")

    def close(self) -> None:
        if getattr(self, "runsc", None):
            for cmd in (["kill", self.container_id, "KILL"], ["delete", "--force", self.container_id]):
                subprocess.run([*self.runsc, *cmd], capture_output=True, timeout=30)
        super().close()
