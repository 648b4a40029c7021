"""`exec`: one command in a fresh shell, confined (rlimits, dumpable again, a subreaper) and its output streamed."""

import base64
import os
import resource
import selectors
import subprocess
import threading
import time

from .files import open_regular
from .processes import TAG_VAR, kill_tree
from .session import b64

# The wrapper saves cwd and exported variables to a private file when the shell exits, even through
# `exit`, so that the next command starts where this one ended.
WRAPPER = (
    "__dsv4_save() {{ {{ pwd; printf '\\0'; env -0; }} > '{path}'; }}\n"
    "trap __dsv4_save EXIT\n"
    'eval "$1"\n'
)
GRACE_S = 0.2
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


def load_prctl():
    """libc's prctl through ctypes, or None where this Python has no ctypes (the host's bounds still hold)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


def child_setup(session):
    """Runs in each command's child between fork and exec: drop the host channel, become dumpable again (so
    /proc/self is ours), be the subreaper of whatever the command orphans, and take hard rlimits."""
    for fd in session.host_fds:
        os.close(fd)
    if session.prctl is not None:
        session.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        session.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    apply_limits(session.limits)


def apply_limits(limits):
    """Hard rlimits the command cannot raise again."""
    pairs = [
        (resource.RLIMIT_NPROC, limits.get("pids")),
        (resource.RLIMIT_AS, limits.get("memory_bytes")),
        (resource.RLIMIT_FSIZE, limits.get("file_size_bytes")),
        (resource.RLIMIT_NOFILE, limits.get("open_files")),
        (resource.RLIMIT_CORE, 0),
    ]
    for res, value in pairs:
        if value is not None:
            resource.setrlimit(res, (value, value))
    try:  # under a memory cgroup, the OOM killer should pick a command, never the agent
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass


def feed_stdin(pipe, data):
    try:
        pipe.write(data)
    except OSError:
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def collect(session, proc, req, deadline):
    """Send stdout/stderr as output lines until the shell exits (plus a short grace) or the deadline passes;
    returns which streams were cut at the cap."""
    cap = req["max_output_bytes"]
    sent = {"stdout": 0, "stderr": 0}
    truncated = {"stdout": False, "stderr": False}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    exited_at = None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline or (exited_at is not None and now - exited_at > GRACE_S):
            break
        for key, _ in sel.select(timeout=min(0.05, deadline - now)):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            keep = chunk[: max(0, cap - sent[key.data])]
            sent[key.data] += len(keep)
            truncated[key.data] |= len(keep) < len(chunk)
            if keep:
                session.send({"event": "output", "id": req["id"], "stream": key.data, "data": b64(keep)})
        if exited_at is None and proc.poll() is not None:
            exited_at = time.monotonic()
    sel.close()
    return truncated


def read_state(path):
    """Parse `pwd NUL env -0` written by the wrapper; None when the shell never got to write it."""
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as f:
            data = f.read()
        os.unlink(path)
    except OSError:
        return None
    if b"\0" not in data:
        return None
    cwd, _, env_blob = data.partition(b"\0")
    env = dict(item.split("=", 1) for item in env_blob.decode(errors="replace").split("\0") if "=" in item)
    return cwd.decode(errors="replace").strip(), env


def op_exec(session, req):
    """Run a command in the session's shell state, or (with `env`) in a fresh shell with exactly that
    environment and `cwd`, which neither reads nor changes the session."""
    fresh = req.get("env") is not None
    tag = f"{os.getpid()}-{req['id']}"
    env = dict(req["env"] if fresh else session.env, **{TAG_VAR: tag})
    state_path = os.path.join(session.private_dir, f"state-{req['id']}")
    argv = [session.shell, "-c", req["cmd"]] if fresh else \
        [session.shell, "-c", WRAPPER.format(path=state_path), "dsv4", req["cmd"]]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=(req.get("cwd") or session.cwd) if fresh else session.cwd, env=env, start_new_session=True,
        stdin=subprocess.PIPE if req.get("stdin") is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: child_setup(session),
    )
    if req.get("stdin") is not None:
        data = base64.b64decode(req["stdin"])
        threading.Thread(target=feed_stdin, args=(proc.stdin, data), daemon=True).start()
    deadline = started + req["timeout"]
    truncated = collect(session, proc, req, deadline)
    timed_out = proc.poll() is None and time.monotonic() >= deadline
    if proc.poll() is None and not timed_out:  # the output closed early; the shell may still be running
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    timed_out = timed_out or proc.poll() is None
    if timed_out:
        kill_tree(proc, tag)
    exit_code = proc.wait()
    duration = time.monotonic() - started
    state = None if fresh else read_state(state_path)
    if state is not None and not timed_out:
        session.cwd, session.env = state[0], {k: v for k, v in state[1].items() if k != TAG_VAR}
    proc.stdout.close()
    proc.stderr.close()
    return {
        "exit_code": exit_code, "stdout_truncated": truncated["stdout"], "stderr_truncated": truncated["stderr"],
        "timed_out": timed_out, "duration_s": duration, "cwd": req.get("cwd") if fresh else session.cwd,
    }
