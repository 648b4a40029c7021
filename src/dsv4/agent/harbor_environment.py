"""`SandboxEnvironment`: a dsv4 sandbox as a Harbor environment, so `harbor run` runs tasks where there is no
Docker (Harbor's own agents, the oracle, or dsv4's agent: `dsv4.agent.harbor_agent`):

    harbor run -p path/to/tasks --env dsv4.agent.harbor_environment:SandboxEnvironment -a oracle

The task's environment is made as `dsv4 agent-tasks` makes it (`dsv4.agent.harbor.load_task`,
`dsv4.agent.task_image`): in the image task.toml's `docker_image` names on this machine, else one built from the
Dockerfile by buildah / podman where it needs a build (RUN, ...), else over the host's read-only system with the
Dockerfile's WORKDIR, ENV and COPY reproduced. A task that cannot be made fails to start, saying why (Harbor
records it as the trial's exception); a build's output goes to the trial's environment-build.log. Harbor's paths
(/tests, /logs, /solution) are private writable directories; task.toml's cpus and memory (after Harbor's
overrides) are the sandbox's limits; the network is Harbor's policy (none, or all; none where task.toml says
allow_internet = false).

Every `exec` runs in a fresh shell (as Docker's `exec` does) with the image's environment and Harbor's, in the
task's WORKDIR unless told otherwise; several may run at once (each on a thread: the sandbox's calls block). The
sandbox has one user, whatever `user` Harbor asks for (the process backend's unprivileged uid, or the container
backend's root). Imports Harbor: it runs under Harbor's Python (>= 3.12), e.g. the `.venv-harbor` that
`make test` makes.
"""

import asyncio
import dataclasses
import shlex
from pathlib import Path
from typing import Any

from harbor.environments.base import BaseEnvironment, ExecResult, SandboxBuildFailedError
from harbor.environments.capabilities import EnvironmentCapabilities, EnvironmentResourceCapabilities
from harbor.models.task.config import NetworkMode, NetworkPolicy

from dsv4.sandbox import Sandbox, SandboxError
from dsv4.sandbox.image_build import BuildFailed

from .harbor import Task, load_task, place_files, verifier_env
from .task_image import open_environment

NO_TIMEOUT_S = 7 * 24 * 3600.0  # an exec Harbor gives no timeout (Docker's runs unbounded)


class SandboxEnvironment(BaseEnvironment):
    """`--ek backend=...`: the sandbox backend of a task that needs no image (default `process`: the host's system
    read-only, the task's files in a private workspace); a task with an image runs in a `container` sandbox."""

    def __init__(self, *args: Any, backend: str = "process", **kwargs: Any):
        self.backend = backend
        self.sandbox: Sandbox | None = None
        super().__init__(*args, **kwargs)

    @staticmethod
    def type() -> str:
        return "dsv4-sandbox"

    @property
    def capabilities(self) -> EnvironmentCapabilities:
        return EnvironmentCapabilities(disable_internet=True)

    @classmethod
    def resource_capabilities(cls) -> EnvironmentResourceCapabilities:
        return EnvironmentResourceCapabilities(cpu_limit=True, memory_limit=True, fractional_cpus=True)

    def _validate_definition(self) -> None:
        self.task: Task = load_task(self.environment_dir.parent)  # TaskError names the file and what is wrong

    async def start(self, force_build: bool) -> None:
        if self.task.unsupported:
            raise SandboxBuildFailedError(f"{self.environment_name}: {self.task.unsupported}")
        c, t = self.task_env_config, self.task  # task.toml's as Harbor read it, after its overrides (--override-cpus)
        task = dataclasses.replace(t, memory_mb=c.memory_mb or t.memory_mb, cpus=c.cpus or t.cpus,
                                   workdir=c.workdir or t.workdir)
        log = self.trial_paths.trial_dir / "environment-build.log"
        try:  # the task as its environment sees it: a built image's WORKDIR and ENV
            self.task, self.sandbox = await asyncio.to_thread(open_environment, task, self.backend,
                                                              network_rules(self._network_policy), log)
        except BuildFailed as e:
            raise SandboxBuildFailedError(f"{self.environment_name}: {e}") from e
        try:
            await asyncio.to_thread(place_files, self.task, self.sandbox)
            await self.ensure_dirs(self._mount_targets(writable_only=True))  # /logs/agent, /logs/verifier, ...
        except BaseException:
            await asyncio.to_thread(self.sandbox.close)
            raise

    async def stop(self, delete: bool) -> None:
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.close)

    async def exec(self, command: str, cwd: str | None = None, env: dict[str, str] | None = None,
                   timeout_sec: int | None = None, user: str | int | None = None) -> ExecResult:
        sb = self._live()
        full_env = {**verifier_env(self.task), **(self._merge_env(env) or {})}
        r = await asyncio.to_thread(sb.run_fresh, command, env=full_env, cwd=cwd or sb.spec.workdir,
                                    timeout=float(timeout_sec or NO_TIMEOUT_S))
        if r.timed_out:
            raise RuntimeError(f"Command timed out after {timeout_sec} seconds")
        return ExecResult(stdout=r.stdout, stderr=r.stderr, return_code=r.exit_code)

    async def upload_file(self, source_path: Path | str, target_path: str) -> None:
        await asyncio.to_thread(self._live().upload, Path(source_path), target_path)

    async def upload_dir(self, source_dir: Path | str, target_dir: str) -> None:
        await asyncio.to_thread(self._live().upload, Path(source_dir), target_dir)

    async def download_file(self, source_path: str, target_path: Path | str) -> None:
        Path(target_path).parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._live().download, source_path, Path(target_path))

    async def download_dir(self, source_dir: str, target_dir: Path | str) -> None:
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._live().download, source_dir, Path(target_dir))

    def _live(self) -> Sandbox:
        if self.sandbox is None:
            raise SandboxError(f"{self.session_id}: the environment is not started")
        return self.sandbox


def network_rules(policy: NetworkPolicy) -> str:
    """The sandbox's network rules for Harbor's policy (an allowlist is refused before start: no capability)."""
    if policy.network_mode == NetworkMode.NO_NETWORK:
        return "none"
    if policy.network_mode == NetworkMode.PUBLIC:
        return "all"
    raise ValueError(f"network_mode={policy.network_mode.value!r} is not supported by the dsv4 sandbox environment: "
                     f"{shlex.join(policy.allowed_hosts)}")
