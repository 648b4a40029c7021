"""Host-side extraction of untrusted tarballs: nothing lands or writes outside the destination."""

import gzip
import io
import os
import stat
import tarfile

from dsv4.sandbox.image import materialize
from dsv4.sandbox.untar import extract

from .test_container import image_cache, oci_tarball  # noqa: F401  (image_cache: an autouse fixture)


def tarball(entries: list[tuple[str, str, object]]) -> tarfile.TarFile:
    """(name, kind, payload): kind is file or suid (payload bytes), sym or link (target), dir, or fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "suid": tarfile.REGTYPE, "sym": tarfile.SYMTYPE,
                         "link": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.mode = 0o4755 if kind == "suid" else 0o755
            if kind in ("sym", "link"):
                info.linkname = payload
            data = payload if kind in ("file", "suid") else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return tarfile.open(fileobj=buf)


EVIL = [
    ("../escape", "file", b"x"), ("/rooted", "file", b"ok"), ("up", "sym", "../../"),
    ("up/through", "file", b"x"), ("abs", "sym", "/etc"), ("abs/passwd", "file", b"x"),
    ("hard", "link", "../../etc/passwd"), ("pipe", "fifo", None), ("tool", "suid", b"#!"),
    ("inner", "sym", "tool"),
]


def test_download_rules_keep_everything_inside(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(tarball(EVIL), dest, links_may_leave=False)
    assert sorted(os.listdir(dest)) == ["abs", "inner", "rooted", "tool", "up"]
    assert os.listdir(tmp_path) == ["dest"] and (dest / "rooted").read_bytes() == b"ok"
    assert not (dest / "up").is_symlink() and (dest / "up" / "through").read_bytes() == b"x"  # a plain dir
    assert not (dest / "abs").is_symlink() and (dest / "abs" / "passwd").read_bytes() == b"x"
    assert stat.S_IMODE((dest / "tool").stat().st_mode) == 0o755  # setuid dropped
    assert os.readlink(dest / "inner") == "tool"


def test_image_rules_keep_absolute_links_as_links(tmp_path):
    dest = tmp_path / "rootfs"
    dest.mkdir()
    extract(tarball(EVIL), dest, links_may_leave=True)
    assert os.readlink(dest / "abs") == "/etc" and os.readlink(dest / "up") == "../../"
    assert sorted(os.listdir(dest)) == ["abs", "inner", "rooted", "tool", "up"]  # nothing written via links
    assert not (tmp_path.parent / "through").exists() and not (tmp_path.parent / "escape").exists()
    assert b"x" != open("/etc/passwd", "rb").read()


def test_whiteouts_cannot_delete_outside_the_rootfs(tmp_path):
    """Layers are applied by umoci (dsv4.sandbox.image): a whiteout through `..` or a link removes nothing of
    the host."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    first = tarball([("link", "sym", str(tmp_path)), ("gone", "file", b"x"), ("kept", "file", b"y")])
    second = tarball([("../.wh.victim", "file", b""), ("link/.wh.victim", "file", b""), (".wh.gone", "file", b"")])
    image = oci_tarball(tmp_path / "image.tar", [gzip.compress(t.fileobj.getvalue()) for t in (first, second)])
    (tmp_path / "scratch").mkdir()
    rootfs = materialize(image, tmp_path / "scratch")
    assert victim.read_text() == "keep" and sorted(os.listdir(rootfs)) == ["kept", "link"]
