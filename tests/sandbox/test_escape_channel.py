"""Attacks on the sandbox's control channel, its transfers and its process control (issue #16): each test is one
attack and the way it must fail."""

import base64
import json
import os
import textwrap
import threading
import time
import tracemalloc

import pytest

from dsv4.sandbox import ProcessConfig, SandboxFileError
from dsv4.sandbox.channel import MAX_FRAME, AgentChannel
from dsv4.sandbox.errors import AgentProtocolError
from dsv4.sandbox.logtail import LogTail

# Runs inside the sandbox: take fd `FD` of process `PID` with pidfd_open + pidfd_getfd; prints the errno or "took".
STEAL = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    pid, fd = int(sys.argv[1]), int(sys.argv[2])
    pidfd = libc.syscall(434, pid, 0)
    stolen = libc.syscall(438, pidfd, fd, 0) if pidfd >= 0 else -1
    print(f"took {os.readlink(f'/proc/self/fd/{stolen}')}" if stolen >= 0 else f"errno {ctypes.get_errno()}",
          flush=True)
    if stolen >= 0 and len(sys.argv) > 3:  # flood the host's end without a newline
        chunk = b"x" * (1 << 20)
        for _ in range(int(sys.argv[3])):
            os.write(stolen, chunk)
""")
# The agent is the parent of the shell that runs a command.
AGENT_PID = "$(cut -d' ' -f4 /proc/$$/stat)"


def test_commands_cannot_reach_the_agents_fds(sb):
    sb.write_file("steal.py", STEAL)
    r = sb.run_shell(f"a={AGENT_PID}; ls /proc/$a/fd >/dev/null 2>&1 && echo listed; python3 steal.py $a 3",
                     timeout=20)
    assert "listed" not in r.stdout  # the agent is not dumpable: its /proc entries are not ours
    assert r.stdout.startswith("errno "), r.stdout + r.stderr
    assert sb.run_shell("echo alive", timeout=10).stdout == "alive\n"


def test_a_flooded_channel_kills_only_its_sandbox(make_sandbox):
    """Wherever a command still gets hold of the host's pipe (bubblewrap's pid 1 held it as its stdout; here
    without the seccomp filter that refuses pidfd_getfd), writing to it without a newline is a protocol error:
    the sandbox is closed, the host's reader stays bounded. Skips where no process a command can reach holds it."""
    sb = make_sandbox(ProcessConfig(seccomp=False))
    sb.write_file("steal.py", STEAL)
    r = sb.run_shell("readlink /proc/1/fd/1; python3 steal.py 1 1", timeout=20)
    if not r.stdout.startswith("pipe:") or "took" not in r.stdout:  # bwrap.py gives pid 1 /dev/null as stdout
        pytest.skip(f"no process holding the channel is reachable here: {r.stdout.strip()}")
    with pytest.raises(AgentProtocolError, match="MAX_FRAME"):
        sb.run_shell("python3 steal.py 1 1 64", timeout=60)
        sb.run_shell("true", timeout=10)
    assert sb.closed


def test_the_host_reader_refuses_a_line_over_the_limit():
    """A hostile agent writing without a newline: the reader fails after MAX_FRAME, it never buffers more."""
    host_r, agent_w = os.pipe()
    agent_r, host_w = os.pipe()
    written = [0]

    def flood():
        chunk = b"y" * (1 << 20)
        try:
            for _ in range(64):
                written[0] += os.write(agent_w, chunk)
        except OSError:
            pass

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    channel = AgentChannel(host_r, host_w, lambda: "test agent")
    channel.start()
    with pytest.raises(AgentProtocolError, match="MAX_FRAME"):
        channel.request("scan", 30, path="/")
    time.sleep(0.2)
    assert written[0] < MAX_FRAME + (8 << 20)  # the flood stalled: nobody reads the rest
    _close_pipes(writer, host_r, agent_w, agent_r, host_w)


def _close_pipes(writer: threading.Thread, host_r: int, *others: int) -> None:
    """The read end first, so the writer's blocked write fails (EPIPE) and it stops, then the rest: closed under a
    live writer, its fd number would go to the next test's pipe and the writer's bytes with it."""
    os.close(host_r)
    writer.join(10)
    assert not writer.is_alive()
    for fd in others:
        os.close(fd)


def test_more_data_than_a_request_allows_is_a_protocol_error():
    """A hostile agent answering a 1 KiB read with endless well-formed data lines: stopped at the request's limit."""
    host_r, agent_w = os.pipe()
    agent_r, host_w = os.pipe()

    def agent():
        rid = json.loads(os.read(agent_r, 1 << 16).split(b"\n")[0])["id"]
        line = (json.dumps({"id": rid, "event": "data", "data": base64.b64encode(b"d" * (256 << 10)).decode()})
                + "\n").encode()
        try:
            for _ in range(256):
                os.write(agent_w, line)
        except OSError:
            pass

    writer = threading.Thread(target=agent, daemon=True)
    writer.start()
    channel = AgentChannel(host_r, host_w, lambda: "test agent")
    channel.start()
    with pytest.raises(AgentProtocolError, match="limit="):
        channel.request("read", 30, path="f", max_bytes=1024)
    assert isinstance(channel.broken, AgentProtocolError)
    _close_pipes(writer, host_r, agent_w, agent_r, host_w)


def test_download_refuses_a_chain_of_links_leading_out(sb, tmp_path):
    sb.run_shell("mkdir out && cd out && ln -s . d && ln -s d/d/d/d/d/d/d/d/d/d/../../../../../../../../../../etc x"
                 " && echo ok > f", timeout=10)
    sb.download("/workspace/out", tmp_path / "got")
    got = tmp_path / "got"
    assert (got / "f").read_text() == "ok\n" and (got / "d").is_symlink()
    assert not (got / "x").exists() and not (got / "x").is_symlink()
    for p in got.iterdir():
        assert os.path.realpath(p).startswith(str(got.resolve()))


def test_read_file_on_a_fifo_is_refused_without_wedging_the_agent(sb):
    sb.run_shell("mkfifo pipe", timeout=10)
    for op in (lambda: sb.read_file("pipe"), lambda: sb.write_file("pipe", b"x")):
        with pytest.raises(SandboxFileError, match="FIFO"):
            op()
    assert sb.run_shell("echo alive", timeout=10).stdout == "alive\n"


def test_an_upload_replaces_a_fifo_instead_of_blocking_on_it(sb, tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("data")
    sb.run_shell("mkdir proj && mkfifo proj/a.txt", timeout=10)
    sb.upload(tmp_path / "tree", "/workspace/proj")
    assert sb.read_file("proj/a.txt") == b"data"


def running(sb, cmdline: str) -> int:
    """How many processes of the sandbox run exactly `cmdline`."""
    script = f'for p in /proc/[0-9]*; do [ "$(tr "\\0" " " < $p/cmdline)" = "{cmdline} " ] && echo $p; done'
    return len(sb.run_shell(script, timeout=10).stdout.split())


def test_a_double_forked_daemon_dies_with_its_timed_out_command(sb):
    r = sb.run_shell("(setsid env -i sleep 3217 &) ; sleep 30", timeout=1)
    assert r.timed_out
    assert running(sb, "sleep 3217") == 0


def test_a_daemon_of_a_finished_command_keeps_running(sb):
    """Only a timeout kills a command's leftovers: a server started in the background stays up."""
    sb.run_shell("(setsid sleep 3218 &)", timeout=10)
    assert running(sb, "sleep 3218") == 1


SIZE = 48 << 20


def test_download_and_upload_hold_a_bounded_amount_of_host_memory(sb, tmp_path):
    sb.run_shell(f"head -c {SIZE} /dev/urandom > big", timeout=60)
    tracemalloc.start()
    try:
        sb.download("/workspace/big", tmp_path / "big")
        down_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        sb.upload(tmp_path / "big", "/workspace/big2")
        up_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big").stat().st_size == SIZE
    assert sb.run_shell("cmp big big2 && echo same", timeout=30).stdout == "same\n"
    assert down_peak < 16 << 20 and up_peak < 16 << 20, (down_peak, up_peak)


def test_read_file_holds_about_one_copy_of_the_file(sb):
    sb.run_shell(f"head -c {SIZE} /dev/urandom > big", timeout=60)
    tracemalloc.start()
    try:
        data = sb.read_file("big", max_bytes=SIZE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data) == SIZE
    assert peak < 1.5 * SIZE, peak


def test_a_runtime_log_keeps_a_bounded_head_and_tail():
    """A command that takes bubblewrap's stderr and writes 64 MiB to it: the host keeps 2 x 32 KiB, no file."""
    log = LogTail(keep=32 << 10)
    writer = os.dup(log.fd)
    log.close_writer()
    os.write(writer, b"bwrap: started\n")
    block = b"z" * (1 << 20)
    for _ in range(64):
        os.write(writer, block)
    os.write(writer, b"\nthe end\n")
    os.close(writer)
    log.wait(30)
    text = log.text()
    assert text.startswith("bwrap: started\n") and text.endswith("the end\n")
    assert len(text) < 70 << 10 and log.dropped == 15 + (64 << 20) + 9 - (64 << 10)


def test_a_fresh_command_is_out_of_the_sessions_reach(sb):
    sb.run_shell("mkdir -p /tmp/.b && printf '#!/bin/sh\\necho fake\\n' > /tmp/.b/bash && chmod +x /tmp/.b/bash"
                 " && echo 'echo hijacked' > /tmp/env.sh && export PATH=/tmp/.b:$PATH SECRET=1 BASH_ENV=/tmp/env.sh"
                 " && cd /tmp", timeout=10)
    assert sb.run_shell("bash -c true", timeout=10).stdout == "hijacked\nfake\n"  # the session is hijacked
    r = sb.run_fresh("bash -c 'echo $PATH ${SECRET:-unset}; pwd'", env={"PATH": "/usr/bin:/bin"}, cwd="/workspace",
                     timeout=10)
    assert (r.stdout, r.exit_code) == ("/usr/bin:/bin unset\n/workspace\n", 0)
    assert sb.run_shell("pwd; echo $SECRET", timeout=10).stdout == "hijacked\n/tmp\n1\n"  # left as it was


def test_stop_processes_kills_every_daemon(sb):
    sb.run_shell("(setsid sleep 3219 &); (sleep 3220 &)", timeout=10)
    assert sb.stop_processes() >= 2
    assert running(sb, "sleep 3219") == 0 and running(sb, "sleep 3220") == 0
    assert sb.run_shell("echo alive", timeout=10).stdout == "alive\n"
