"""Images built from a Dockerfile by buildah (RUN included) and run in a writable `container` sandbox: root of
its user namespace over a private overlay of the image, discarded on close. Offline: the base is a busybox
image made here with umoci."""

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from dsv4.sandbox import ContainerConfig, Sandbox, SandboxError, image_build, overlay
from dsv4.sandbox.image_build import BuildFailed, build_image

from .test_container import busybox_rootfs, image_cache  # noqa: F401  (fixtures)


def oci_layout(rootfs: Path, layout: Path, tag: str = "1") -> str:
    """An OCI layout of `rootfs` as one layer, made by umoci; returns `oci:LAYOUT:TAG` for a Dockerfile's FROM."""
    for tool in ("umoci", "buildah"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package {tool})")
    layer = layout.with_suffix(".tar")
    with tarfile.open(layer, "w") as tar:
        tar.add(rootfs, arcname=".")
    for argv in (["init", "--layout", str(layout)], ["new", "--image", f"{layout}:{tag}"],
                 ["raw", "add-layer", "--image", f"{layout}:{tag}", str(layer)],
                 ["config", "--image", f"{layout}:{tag}", "--config.env", "PATH=/bin"]):
        subprocess.run(["umoci", *argv], check=True, capture_output=True)
    return f"oci:{layout}:{tag}"


@pytest.fixture
def writable_root():
    """Skips where a writable image root cannot be made (not root: the overlay is mounted on the host)."""
    why = overlay.unavailable()
    if why is not None:
        pytest.skip(why)


@pytest.fixture
def busybox_base(busybox_rootfs, image_cache):  # noqa: F811
    if os.geteuid() != 0:  # rootless buildah runs RUN steps only with /etc/subuid and /etc/subgid ranges
        pytest.skip("image builds are tested as root")
    yield oci_layout(busybox_rootfs, image_cache / "busybox-layout")
    forget_base(image_cache / "busybox-layout")


def forget_base(layout: Path) -> None:
    """Drop the copy buildah keeps of a FROM oci:LAYOUT base (named localhost/LAYOUT), a new one per test run."""
    subprocess.run(["buildah", "rmi", "--force", f"localhost{layout}:latest"], capture_output=True)


def context(path: Path, dockerfile: str, **files: str) -> Path:
    path.mkdir()
    (path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.mark.usefixtures("writable_root")
def test_a_built_image_runs_as_root_over_a_private_overlay(make_sandbox, busybox_base, tmp_path):
    make_sandbox("process")  # skips where bubblewrap cannot run
    ctx = context(tmp_path / "ctx", f"FROM {busybox_base}\nRUN echo built > /built && mkdir /data\n"
                  "WORKDIR /app\nCOPY seed /app/\nENV K=v\n", seed="seed\n")
    built = build_image(ctx)
    assert built.workdir == "/app" and built.env == {"PATH": "/bin", "K": "v"}
    assert build_image(ctx).layout == built.layout  # cached by the context's contents
    cfg = ContainerConfig(image=built.layout, writable=True)
    with Sandbox.create(cfg, workdir=built.workdir, env=built.env) as sb:
        r = sb.run_shell("id -u; cat /built seed; echo $K; echo changed > /built; echo new > /etc/new; "
                         "touch /data/x; cat /built; echo out > out.txt", timeout=10)
        assert (r.exit_code, r.stdout) == (0, "0\nbuilt\nseed\nv\nchanged\n"), r.stderr
    with Sandbox.create(cfg, workdir=built.workdir, env=built.env) as sb:  # the first one's writes are gone
        r = sb.run_shell("cat /built; ls /etc/new /data/x out.txt 2>&1 | wc -l; ls", timeout=10)
        assert r.stdout == "built\n3\nseed\n"
    read_only = Sandbox.create(ContainerConfig(image=built.layout), workdir="/workspace")
    with read_only as sb:  # the default: the image read-only, a fresh workspace, uid 1000
        r = sb.run_shell("id -u; echo x > /built", timeout=10)
        assert r.stdout == "1000\n" and "Read-only file system" in r.stderr


def test_a_failed_step_is_reported_with_the_builder_output(busybox_base, tmp_path):
    ctx = context(tmp_path / "ctx", f"FROM {busybox_base}\nRUN echo about to fail && false\n")
    before = working_containers()
    with pytest.raises(BuildFailed, match="about to fail") as e:
        build_image(ctx)
    assert "RUN echo about to fail && false" in str(e.value)
    assert working_containers() == before  # nothing left mounted in the builder's storage


def test_a_build_past_its_time_limit_is_killed_with_its_run_steps(busybox_base, tmp_path):
    ctx = context(tmp_path / "ctx", f"FROM {busybox_base}\nRUN sleep 47.25\n")
    start = time.monotonic()
    with pytest.raises(BuildFailed, match="timed out"):
        build_image(ctx, timeout_s=3)
    assert time.monotonic() - start < 30
    time.sleep(0.5)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and b"47.25" in _cmdline(p)]


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def working_containers() -> set[str]:
    r = subprocess.run(["buildah", "containers", "--quiet"], capture_output=True, text=True, check=True)
    return set(r.stdout.split())


def test_without_a_builder_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(image_build, "find_builder", lambda: None)
    with pytest.raises(SandboxError, match="install buildah .Debian package buildah. or podman"):
        build_image(context(tmp_path / "ctx", "FROM scratch\nRUN true\n"))


def test_the_context_digest_follows_every_file(tmp_path):
    ctx = context(tmp_path / "ctx", "FROM scratch\n", a="1")
    first = image_build.context_digest(ctx, ctx / "Dockerfile", {})
    (ctx / "a").write_text("2")
    second = image_build.context_digest(ctx, ctx / "Dockerfile", {})
    os.chmod(ctx / "a", 0o755)
    assert len({first, second, image_build.context_digest(ctx, ctx / "Dockerfile", {}),
                image_build.context_digest(ctx, ctx / "Dockerfile", {"V": "1"})}) == 4
