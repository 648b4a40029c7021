"""Incremental workspace snapshots and restore-as-new-sandbox."""

import io
import tarfile

from dsv4.sandbox import Sandbox, Snapshot


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted(tar.getnames())


def test_snapshots_are_incremental_and_restore_as_new_sandboxes(make_sandbox):
    sb = make_sandbox()
    sb.run_shell("mkdir -p src && echo 1 > src/a && echo keep > b && echo gone > c && ln -s b link",
                 timeout=10)
    s1 = sb.snapshot()
    sb.run_shell("echo 2 > src/a && rm c && echo new > d && cd src && export PHASE=two", timeout=10)
    s2 = sb.snapshot()
    assert len(s1.layers) == 1 and len(s2.layers) == 2 and s2.layers[0] == s1.layers[0]
    assert tar_names(s2.layers[1].tar) == ["d", "src/a"] and s2.layers[1].deleted == ("c",)

    r1 = Sandbox.restore(s1)
    r2 = Sandbox.restore(s2)
    try:
        listing = "find . | sort; cat src/a; readlink link"
        assert r1.run_shell(listing, timeout=10).stdout == "\n".join(
            [".", "./b", "./c", "./link", "./src", "./src/a", "1", "b", ""])
        assert r2.run_shell("pwd; echo $PHASE; cat a; ls ..", timeout=10).stdout == (
            "/workspace/src\ntwo\n2\nb\nd\nlink\nsrc\n")
        r2.run_shell("echo changed-in-copy > ../b", timeout=10)
        assert sb.read_file("/workspace/b") == b"keep\n"
    finally:
        r1.close()
        r2.close()


def test_snapshot_without_changes_adds_no_layer(sb):
    sb.write_file("x", "1")
    assert len(sb.snapshot().layers) == 1
    assert len(sb.snapshot().layers) == 1


def test_snapshot_save_load_roundtrip(sb, tmp_path):
    sb.write_file("bin.dat", bytes(range(256)) * 10)
    snap = sb.snapshot()
    snap.save(tmp_path / "snap.json")
    loaded = Snapshot.load(tmp_path / "snap.json")
    assert loaded == snap
    with Sandbox.restore(loaded) as copy:
        assert copy.read_file("bin.dat") == bytes(range(256)) * 10
