"""The public API on the `process` backend: commands, session state, files, async twin."""

import asyncio

import pytest

from dsv4.sandbox import AsyncSandbox, Sandbox, SandboxClosed, SandboxFileError, UnknownBackend


def test_acceptance_shape(make_sandbox):
    sb = make_sandbox()
    r = sb.run_shell("echo hello; echo oops >&2; exit 3", timeout=10)
    assert (r.exit_code, r.stdout, r.stderr) == (3, "hello\n", "oops\n")
    assert not r.truncated and not r.timed_out and r.duration_s > 0


def test_session_keeps_cwd_and_exports(sb):
    sb.run_shell("mkdir -p sub/dir && cd sub/dir && export GREETING=hi && LOCAL=1", timeout=10)
    r = sb.run_shell('pwd; echo "$GREETING"', timeout=10)
    assert r.stdout == "/workspace/sub/dir\nhi\n"
    assert r.cwd == "/workspace/sub/dir"


def test_exit_inside_command_still_saves_state(sb):
    sb.run_shell("cd /tmp; export A=1; exit 7", timeout=10)
    assert sb.run_shell("pwd; echo $A", timeout=10).stdout == "/tmp\n1\n"


def test_stdin_and_env(make_sandbox):
    sb = make_sandbox(env={"MODE": "test"})
    r = sb.run_shell("tr a-z A-Z; echo $MODE", timeout=10, stdin="abc\n")
    assert r.stdout == "ABC\ntest\n"


def test_streaming_callback_sees_output_in_order(sb):
    chunks = []
    r = sb.run_shell("for i in 1 2 3; do echo $i; sleep 0.05; done", timeout=10,
                     on_output=lambda stream, data: chunks.append((stream, data)))
    assert b"".join(d for s, d in chunks if s == "stdout") == b"1\n2\n3\n" == r.stdout.encode()


def test_files_roundtrip(sb, tmp_path):
    sb.write_file("a/b.bin", bytes(range(256)), mode=0o600)
    assert sb.read_file("/workspace/a/b.bin") == bytes(range(256))
    assert sb.run_shell("stat -c %a a/b.bin", timeout=10).stdout == "600\n"
    assert [(e.name, e.kind, e.size) for e in sb.list_dir("a")] == [("b.bin", "file", 256)]
    with pytest.raises(SandboxFileError) as e:
        sb.read_file("missing.txt")
    assert e.value.errno == 2


def test_upload_and_download_trees(sb, tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("print(42)\n")
    (src / "top.txt").write_text("top")
    sb.upload(src, "/workspace/proj")
    assert sb.run_shell("python3 proj/pkg/m.py; cat proj/top.txt", timeout=10).stdout == "42\ntop"
    sb.run_shell("echo made > proj/new.txt && ln -s new.txt proj/link", timeout=10)
    sb.download("/workspace/proj", tmp_path / "out")
    assert (tmp_path / "out" / "new.txt").read_text() == "made\n"
    assert (tmp_path / "out" / "link").is_symlink() and (tmp_path / "out" / "link").read_text() == "made\n"
    sb.download("/workspace/proj/top.txt", tmp_path / "single.txt")
    assert (tmp_path / "single.txt").read_text() == "top"


def test_download_refuses_links_that_leave_the_destination(sb, tmp_path):
    sb.run_shell("mkdir d && ln -s ../../../../etc/hostname d/up && ln -s /etc/hostname d/abs"
                 " && echo ok > d/f", timeout=10)
    sb.download("/workspace/d", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f"]


def test_closed_sandbox_refuses_calls(make_sandbox):
    sb = make_sandbox()
    sb.close()
    sb.close()
    with pytest.raises(SandboxClosed):
        sb.run_shell("true", timeout=5)


def test_context_manager_closes():
    try:
        with Sandbox.create("process") as sb:
            assert sb.run_shell("echo in", timeout=10).stdout == "in\n"
    except Exception as e:  # BackendUnavailable
        pytest.skip(str(e))
    assert sb.closed and not sb.backend.is_alive()


def test_unknown_backend_names_the_choices():
    with pytest.raises(UnknownBackend, match="'nope'"):
        Sandbox.create("nope")


def test_async_twin(make_sandbox):
    make_sandbox()  # skips when bubblewrap is unavailable

    async def main():
        async with await AsyncSandbox.create("process") as sb:
            await sb.write_file("x.txt", "async")
            results = await asyncio.gather(*(sb.run_shell(f"echo {i}", timeout=10) for i in range(3)))
            return [r.stdout for r in results], await sb.read_file("x.txt")

    outs, data = asyncio.run(main())
    assert sorted(outs) == ["0\n", "1\n", "2\n"] and data == b"async"


def test_idle_ttl_reaps(make_sandbox):
    import time

    sb = make_sandbox(ttl_running_stop=0.5)
    assert sb.run_shell("sleep 1.5; echo alive", timeout=10).stdout == "alive\n"  # busy is not idle
    deadline = time.monotonic() + 10
    while not sb.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sb.closed and not sb.backend.is_alive()


def test_sandbox_outlives_the_thread_that_created_it(make_sandbox):
    import threading

    box = []
    t = threading.Thread(target=lambda: box.append(make_sandbox()))
    t.start()
    t.join()
    assert box[0].run_shell("echo alive", timeout=10).stdout == "alive\n"


def test_importing_the_package_pulls_no_model_code():
    import subprocess
    import sys

    code = ("import sys, dsv4.sandbox; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'numpy', 'tokenizers', 'safetensors') or (m.startswith('dsv4.') and "
            "not m.startswith('dsv4.sandbox'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


def test_commands_in_one_sandbox_run_concurrently(sb):
    from concurrent.futures import ThreadPoolExecutor

    from .procs import host_processes_with

    waits = "while [ ! -e /tmp/go ]; do sleep 0.0217; done; echo saw-go"  # deadlocks if calls were serialized
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(sb.run_shell, waits, 20)
        while not host_processes_with("sleep 0.0217") and not waiting.done():  # it runs in the sandbox
            pass
        assert sb.run_shell("touch /tmp/go && echo went", timeout=10).stdout == "went\n"
        r = waiting.result()
    assert r.stdout == "saw-go\n" and not r.timed_out


def test_scratch_dirs_are_private_writable_and_start_empty(make_sandbox):
    sb = make_sandbox(workdir="/app", scratch_dirs=("/tests", "/logs/verifier"))
    r = sb.run_shell("pwd; ls -A /tests; echo 0.5 > /logs/verifier/reward.txt; cat /logs/verifier/reward.txt; "
                     "touch /elsewhere", timeout=10)
    assert r.stdout == "/app\n0.5\n" and "Read-only file system" in r.stderr
    sb.write_file("/tests/test.sh", "exit 0\n")
    assert sb.read_file("/tests/test.sh") == b"exit 0\n"


@pytest.mark.parametrize("scratch, says", [
    (("tests",), "absolute path"), (("/tmp",), "outside"), (("/app/x",), "overlaps the workdir"),
    (("/",), "outside"), (("/a/../etc",), "absolute path"),
])
def test_scratch_dirs_are_checked(scratch, says):
    from dsv4.sandbox import ProcessConfig, SandboxSpec

    with pytest.raises(ValueError, match=says):
        SandboxSpec(backend=ProcessConfig(), workdir="/app", scratch_dirs=scratch)


def test_the_vm_guest_mounts_scratch_dirs():
    from dsv4.sandbox import SandboxSpec, VMConfig
    from dsv4.sandbox.backends.vm import init_script

    script = init_script(SandboxSpec(backend=VMConfig(), scratch_dirs=("/tests",)), ["python3"])
    assert "mkdir -p /tests; mount -t tmpfs -o size=" in script
