"""A Harbor task's environment in its own image: one task.toml's `[environment] docker_image` names on this
machine (an OCI layout directory or archive, or a `docker save` archive, relative to the task), else one built
from its Dockerfile where that needs a build (RUN, COPY --from, ...). A registry's image name is not pulled:
the Dockerfile it was built from is built instead.

A Dockerfile that only sets WORKDIR / ENV and copies local files is reproduced over the host's read-only system
(`dsv4.agent.harbor`), with no image. Any other is built by a real builder (`dsv4.sandbox.image_build`: buildah
or podman, cached by the context's contents) and the task runs in a `container` sandbox over that image:
root of its user namespace, a private writable overlay of the image discarded after the task, the image's ENV
and WORKDIR, task.toml's memory / cpus as the sandbox's limits. Without a builder the task is skipped and the
reason names the tool to install.
"""

import dataclasses
from pathlib import Path

from dsv4.sandbox import ContainerConfig, Sandbox, overlay
from dsv4.sandbox.image_build import INSTALL_HINT, build_image, described, find_builder

from .harbor import SCRATCH, Task, sandbox_limits

DEFAULT_WORKDIR = "/root"
"""Where a task image without WORKDIR runs (Docker's `/` cannot hold the sandbox's own directories)."""


def decide(task: Task) -> None:
    """A task whose task.toml names a local image runs in it. One its Dockerfile keeps from running over the
    host's system is built when a builder is installed (`task.build` holds why it needs one), else skipped with
    the reason and what to install."""
    needs_image = task.image is not None or (
        task.unsupported is not None and (task.path / "environment" / "Dockerfile").is_file())
    if not needs_image:
        return
    why_not = overlay.unavailable()  # before a build that could not be used
    if why_not is not None:
        task.unsupported = f"{task.unsupported or 'its image'}: {why_not}"
        task.image = None
    elif task.image is not None:
        task.unsupported = None
    elif find_builder() is None:
        task.unsupported = f"{task.unsupported}; {INSTALL_HINT}"
    else:
        task.build, task.unsupported = task.unsupported, None


def network_for(task: Task, network: str) -> str:
    """The run's network rules, none where task.toml says `allow_internet = false`."""
    return "none" if task.allow_internet is False else network


def open_environment(task: Task, backend: str, network: str, log: Path | None = None) -> tuple[Task, Sandbox]:
    """(the task as its environment sees it, a new sandbox of it): over the host's system for a task that needs
    no build (`backend`), else in its built image (the `container` backend, whatever `backend` says)."""
    network = network_for(task, network)
    if task.build is None and task.image is None:
        sb = Sandbox.create(backend, workdir=task.workdir, scratch_dirs=(*SCRATCH, *task.scratch_dirs),
                            env=task.env, network_rules=network, **sandbox_limits(task))
        return task, sb
    built = described(task.image) if task.image is not None else \
        build_image(task.path / "environment", log=log, timeout_s=task.build_timeout_s)
    # The image holds the copies, modes and directories; the verifier's environment is the image's own.
    task = dataclasses.replace(task, workdir=built.workdir or DEFAULT_WORKDIR, env=built.env, copies=[], modes=[],
                               scratch_dirs=[])
    sb = Sandbox.create(ContainerConfig(image=built.layout, writable=True), workdir=task.workdir,
                        scratch_dirs=SCRATCH, env=task.env, network_rules=network, **sandbox_limits(task))
    return task, sb
