"""The `container` backend on a busybox image: as a rootfs directory and as an OCI image layout tarball."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

import pytest

from dsv4.sandbox import ContainerConfig


@pytest.fixture(autouse=True)
def image_cache(monkeypatch):
    """Unpacked images go to a cache of the test's own (each run's gzip layers have new digests), which the
    sandboxes' own uids can go through (pytest's tmp_path is private to root)."""
    # hex only: buildah names a FROM oci:PATH base after PATH, which must read as an image reference ("-_" won't)
    d = Path(tempfile.gettempdir()) / f"dsv4-image-cache-{uuid.uuid4().hex}"
    d.mkdir(mode=0o711)
    monkeypatch.setenv("DSV4_IMAGE_CACHE", str(d))
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def busybox_rootfs():
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (Debian package busybox-static)")
    with tempfile.TemporaryDirectory(prefix="dsv4-busybox-") as d:
        root = Path(d)
        root.chmod(0o755)
        (root / "bin").mkdir()
        (root / "etc").mkdir()
        shutil.copy(busybox, root / "bin" / "busybox")
        for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split():
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (root / "etc" / "motd").write_text("from layer one\n")
        yield root


def layer_bytes(files: dict[str, bytes], base: Path | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if base is not None:
            tar.add(base, arcname=".")
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def oci_tarball(path: Path, layers: list[bytes]) -> Path:
    blobs: dict[str, bytes] = {}

    def put(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": f"application/vnd.oci.image.{media_type}", "digest": f"sha256:{digest}",
                "size": len(data)}

    config = put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [
        "sha256:" + hashlib.sha256(gzip.decompress(b)).hexdigest() for b in layers]}}).encode(), "config.v1+json")
    layer_refs = [put(b, "layer.v1.tar+gzip") for b in layers]
    manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config, "layers": layer_refs}).encode(), "manifest.v1+json")
    with tarfile.open(path, "w") as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", json.dumps({"schemaVersion": 2, "manifests": [manifest]}).encode()),
                           *((f"blobs/sha256/{d}", b) for d, b in blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_busybox_rootfs_directory(make_sandbox, busybox_rootfs):
    sb = make_sandbox("container", rootfs=busybox_rootfs)
    r = sb.run_shell("busybox | head -1; cat /etc/motd; ls /usr/bin 2>&1; echo x > /bin/evil; "
                     "cd /tmp; export A=1", timeout=10)
    assert r.stdout.startswith("BusyBox v") and "from layer one" in r.stdout
    assert "No such file or directory" in r.stdout and "Read-only file system" in r.stderr
    r = sb.run_shell("pwd; echo $A; wget -q -O- http://127.0.0.1:1 2>&1", timeout=10)
    assert r.stdout.startswith("/tmp\n1\n") and r.exit_code != 0
    sb.write_file("/workspace/f", "data")
    assert sb.run_shell("cat /workspace/f", timeout=10).stdout == "data"
    assert not (busybox_rootfs / "workspace").exists()


def test_oci_image_layers_and_whiteouts(make_sandbox, busybox_rootfs, tmp_path):
    one = layer_bytes({}, base=busybox_rootfs)
    two = layer_bytes({"etc/.wh.motd": b"", "etc/issue": b"layer two\n"})
    image = oci_tarball(tmp_path / "image.tar", [one, two])
    sb = make_sandbox(ContainerConfig(image=image))
    r = sb.run_shell("cat /etc/issue; ls /etc", timeout=10)
    assert r.stdout == "layer two\nissue\npasswd\n"


def test_docker_save_tarball(make_sandbox, busybox_rootfs, tmp_path, monkeypatch):
    layers = {"base/layer.tar": gzip.decompress(layer_bytes({}, base=busybox_rootfs)),
              "top/layer.tar": gzip.decompress(layer_bytes({"etc/issue": b"docker\n"}))}
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["t:1"], "Layers": list(layers)}]).encode()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [
        "sha256:" + hashlib.sha256(b).hexdigest() for b in layers.values()]}}).encode()
    with tarfile.open(tmp_path / "saved.tar", "w") as tar:
        for name, data in [("manifest.json", manifest), ("config.json", config), *layers.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sb = make_sandbox(ContainerConfig(image=tmp_path / "saved.tar"))
    assert sb.run_shell("cat /etc/issue /etc/motd", timeout=10).stdout == "docker\nfrom layer one\n"
    from dsv4.sandbox import SandboxError, image

    def converted(*args):
        raise SandboxError("converted again")
    monkeypatch.setattr(image, "docker_archive_layout", converted)
    again = make_sandbox(ContainerConfig(image=tmp_path / "saved.tar"))  # the archive's image, unpacked once
    assert again.run_shell("cat /etc/issue", timeout=10).stdout == "docker\n"
    os.utime(tmp_path / "saved.tar", ns=(1, 1))  # another archive at that path: converted anew
    with pytest.raises(SandboxError, match="converted again"):
        make_sandbox(ContainerConfig(image=tmp_path / "saved.tar"))


def test_container_needs_an_image():
    from dsv4.sandbox import BackendUnavailable, Sandbox

    with pytest.raises(BackendUnavailable, match="needs an image"):
        Sandbox.create("container")


def test_runsc_runtime_or_a_stated_reason(make_sandbox, busybox_rootfs):
    sb = make_sandbox(ContainerConfig(image=busybox_rootfs, runtime="runsc"))
    r = sb.run_shell("uname -r; cat /etc/motd", timeout=30)
    assert r.exit_code == 0 and r.stdout.endswith("from layer one\n")
    assert os.uname().release not in r.stdout  # gVisor's own kernel answers


def test_an_unpacked_image_keeps_no_device_node_fifo_or_setuid_bit(busybox_rootfs, tmp_path):
    from dsv4.sandbox.image import materialize

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, mode in [("opt/disk", tarfile.BLKTYPE, 0o666), ("opt/null", tarfile.CHRTYPE, 0o666),
                                 ("opt/pipe", tarfile.FIFOTYPE, 0o666), ("opt/su", tarfile.REGTYPE, 0o4755),
                                 ("opt/sg", tarfile.REGTYPE, 0o2755)]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.devmajor, info.devminor = kind, mode, 8, 0
            tar.addfile(info, io.BytesIO(b""))
    image = oci_tarball(tmp_path / "image.tar", [layer_bytes({}, base=busybox_rootfs), gzip.compress(buf.getvalue())])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rootfs = materialize(image, scratch)
    assert sorted(p.name for p in (rootfs / "opt").iterdir()) == ["sg", "su"]
    assert [oct((rootfs / "opt" / n).stat().st_mode & 0o7777) for n in ("sg", "su")] == ["0o755", "0o755"]


def test_a_writable_root_never_makes_the_workdir_through_a_link_out_of_the_image(make_sandbox, busybox_rootfs):
    from dsv4.sandbox import SandboxError, overlay

    make_sandbox("process")
    if overlay.unavailable():
        pytest.skip(overlay.unavailable())
    with tempfile.TemporaryDirectory(prefix="dsv4-image-") as d, tempfile.TemporaryDirectory() as host_dir:
        root = Path(d) / "root"
        shutil.copytree(busybox_rootfs, root, symlinks=True)
        (root / "app").symlink_to(host_dir)  # inside the image, a link to its own /tmp/...; on the host, host_dir
        with pytest.raises(SandboxError, match="goes through a link of the image"):
            make_sandbox(ContainerConfig(image=root, writable=True), workdir="/app/sub")
        assert os.listdir(host_dir) == []
