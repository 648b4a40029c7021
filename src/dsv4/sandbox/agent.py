"""Guest agent: the one program the host starts inside a sandbox (the DSec "chronus" role).

It speaks JSON lines on its stdin/stdout, runs each command in a fresh shell that inherits the session's cwd
and exported variables, caps output, applies the limits to every command, and on timeout kills every
process the command started (tagged through an environment variable). Stdlib only: it runs under the
sandbox's own `python3`, never imports dsv4, and does nothing at import.
"""

import base64
import io
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

TAG_VAR = "DSV4_CMD_TAG"
# The wrapper saves cwd and exported variables to a private file when the shell exits, even through
# `exit`, so that the next command starts where this one ended.
WRAPPER = (
    "__dsv4_save() {{ {{ pwd; printf '\\0'; env -0; }} > '{path}'; }}\n"
    "trap __dsv4_save EXIT\n"
    'eval "$1"\n'
)
GRACE_S = 0.2


class Session:
    """Shell state that survives between commands, plus the limits applied to each of them."""

    def __init__(self, init):
        self.cwd = init["cwd"]
        self.env = dict(init["env"])
        self.limits = init["limits"]
        self.shell = init.get("shell") or ("/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh")
        self.private_dir = init.get("private_dir") or tempfile.mkdtemp(prefix="dsv4-agent-")
        self.forwards = {}
        self.write_lock = threading.Lock()
        self.out = None

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self.write_lock:
            self.out.write(data)
            self.out.flush()


def apply_limits(limits):
    """Runs in each command's child between fork and exec: hard rlimits it cannot raise again."""
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


def command_pids(root, tag):
    """Live pids of one command: its descendants, its process group, and whatever carries its tag in the
    environment (which finds daemons that left both the tree and the group)."""
    needle = (TAG_VAR + "=" + tag).encode()
    parents, found = {}, set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, ppid, pgrp = f.read().rpartition(")")[2].split()[:3]
            with open(f"/proc/{pid}/environ", "rb") as f:
                tagged = needle in f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if state in ("Z", "X"):
            continue
        parents[pid] = int(ppid)
        if tagged or int(pgrp) == root:
            found.add(pid)
    for pid in parents:
        p = pid
        while p in parents and p not in found and p != root:
            p = parents[p]
        if p == root or p in found:
            found.add(pid)
    return found


def kill_tree(proc, tag):
    """Stop, then kill, every process of the command until none is left (fork bombs included)."""
    for _ in range(200):
        pids = command_pids(proc.pid, tag)
        if proc.poll() is None:
            pids.add(proc.pid)
        if not pids:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        time.sleep(0.005)


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
    """Read stdout/stderr until the shell exits (plus a short grace) or the deadline passes."""
    cap = req["max_output_bytes"]
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
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
            keep = chunk[: max(0, cap - len(bufs[key.data]))]
            bufs[key.data] += keep
            truncated[key.data] |= len(keep) < len(chunk)
            if req.get("stream") and keep:
                session.send({"event": "output", "id": req["id"], "stream": key.data, "data": b64(keep)})
        if exited_at is None and proc.poll() is not None:
            exited_at = time.monotonic()
    sel.close()
    return bufs, truncated


def b64(data):
    return base64.b64encode(bytes(data)).decode()


def read_state(path):
    """Parse `pwd NUL env -0` written by the wrapper; None when the shell never got to write it."""
    try:
        with open(path, "rb") as f:
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
    tag = f"{os.getpid()}-{req['id']}"
    env = dict(session.env, **{TAG_VAR: tag})
    state_path = os.path.join(session.private_dir, f"state-{req['id']}")
    started = time.monotonic()
    proc = subprocess.Popen(
        [session.shell, "-c", WRAPPER.format(path=state_path), "dsv4", req["cmd"]],
        cwd=session.cwd, env=env, start_new_session=True,
        stdin=subprocess.PIPE if req.get("stdin") is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: apply_limits(session.limits),
    )
    if req.get("stdin") is not None:
        data = base64.b64decode(req["stdin"])
        threading.Thread(target=feed_stdin, args=(proc.stdin, data), daemon=True).start()
    deadline = started + req["timeout"]
    bufs, truncated = collect(session, proc, req, deadline)
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
    state = read_state(state_path)
    if state is not None and not timed_out:
        session.cwd, session.env = state[0], {k: v for k, v in state[1].items() if k != TAG_VAR}
    proc.stdout.close()
    proc.stderr.close()
    return {
        "exit_code": exit_code, "stdout": b64(bufs["stdout"]), "stderr": b64(bufs["stderr"]),
        "stdout_truncated": truncated["stdout"], "stderr_truncated": truncated["stderr"],
        "timed_out": timed_out, "duration_s": duration, "cwd": session.cwd,
    }


def resolve(session, path):
    return path if os.path.isabs(path) else os.path.join(session.cwd, path)


def op_read(session, req):
    with open(resolve(session, req["path"]), "rb") as f:
        data = f.read(req["max_bytes"] + 1)
    if len(data) > req["max_bytes"]:
        raise OSError(27, f"file larger than max_bytes={req['max_bytes']}")
    return {"data": b64(data)}


def op_write(session, req):
    path = resolve(session, req["path"])
    if req.get("mkdirs"):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, req.get("mode", 0o644))
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(req["data"]))
    return {}


def op_list(session, req):
    path = resolve(session, req["path"])
    entries = []
    with os.scandir(path) as it:
        for e in it:
            kind = "dir" if e.is_dir(follow_symlinks=False) else "link" if e.is_symlink() else "file"
            size = e.stat(follow_symlinks=False).st_size
            entries.append({"name": e.name, "kind": kind, "size": size})
    return {"entries": sorted(entries, key=lambda e: e["name"])}


def op_tar(session, req):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(resolve(session, req["path"]), arcname=req.get("arcname", "."))
    return {"data": b64(buf.getvalue())}


def op_untar(session, req):
    dest = resolve(session, req["path"])
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(req["data"]))) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir() or m.issym()]
        # Inside the sandbox nothing can leave it; newer Pythons must not filter absolute links out.
        trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        tar.extractall(dest, members=members, **trusted)
    return {}


def splice(a, b):
    """Copy both ways between two connected sockets; a half-close is passed on, both close at the end."""
    left = [2]
    lock = threading.Lock()

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        with lock:
            left[0] -= 1
            if left[0] == 0:
                a.close()
                b.close()

    for src, dst in ((a, b), (b, a)):
        threading.Thread(target=pump, args=(src, dst), daemon=True).start()


def forward(listener, unix_path):
    """Accept on the sandbox's loopback and relay each connection to the host through a unix socket."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed by op_unforward
            return
        up = socket.socket(socket.AF_UNIX)
        try:
            up.connect(unix_path)
        except OSError:
            conn.close()
            continue
        splice(conn, up)


def entry_of(path):
    st = os.lstat(path)
    if os.path.islink(path):
        return ["link", 0, st.st_mtime_ns, st.st_mode, os.readlink(path)]
    kind = "dir" if os.path.isdir(path) else "file"
    is_file = kind == "file"
    return [kind, st.st_size if is_file else 0, st.st_mtime_ns if is_file else 0, st.st_mode, None]


def op_scan(session, req):
    """Manifest of a tree: relative path -> [kind, size, mtime_ns, mode, link target]."""
    root = resolve(session, req["path"])
    manifest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                manifest[os.path.relpath(full, root)] = entry_of(full)
            except OSError:
                continue
    return {"manifest": manifest}


def op_pack(session, req):
    """A tar of the listed paths (relative to `path`), each added without recursion."""
    root = resolve(session, req["path"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in req["paths"]:
            try:
                tar.add(os.path.join(root, rel), arcname=rel, recursive=False)
            except OSError:
                continue
    return {"data": b64(buf.getvalue())}


def op_remove(session, req):
    root = resolve(session, req["path"])
    for rel in sorted(req["paths"], reverse=True):
        full = os.path.join(root, rel)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        elif os.path.lexists(full):
            os.unlink(full)
    return {}


def op_session(session, req):
    """Set the shell state when given (restore, resume); always answer with the current one."""
    session.cwd = req.get("cwd") or session.cwd
    session.env = dict(req.get("env") or session.env)
    return {"cwd": session.cwd, "env": session.env}


def op_forward(session, req):
    family = socket.AF_INET6 if ":" in req["host"] else socket.AF_INET
    listener = socket.socket(family)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((req["host"], req["port"]))
    listener.listen(64)
    session.forwards[(req["host"], req["port"])] = listener
    threading.Thread(target=forward, args=(listener, req["unix_path"]), daemon=True).start()
    return {}


def op_unforward(session, req):
    listener = session.forwards.pop((req["host"], req["port"]), None)
    if listener is not None:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    return {}


OPS = {"exec": op_exec, "read": op_read, "write": op_write, "list": op_list, "tar": op_tar,
       "untar": op_untar, "forward": op_forward, "scan": op_scan, "pack": op_pack, "remove": op_remove,
       "session": op_session, "unforward": op_unforward}


def serve(session, inp):
    """Commands run on their own threads (several may run at once); other operations run in turn."""
    for line in inp:
        req = json.loads(line)
        if req["op"] == "exec":
            threading.Thread(target=answer, args=(session, req), daemon=True).start()
        else:
            answer(session, req)


def answer(session, req):
    try:
        reply = dict(OPS[req["op"]](session, req), ok=True)
    except OSError as e:
        reply = {"ok": False, "errno": e.errno, "error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001 - every failure goes back to the host, never kills the agent
        reply = {"ok": False, "errno": None, "error": f"{type(e).__name__}: {e}"}
    reply["id"] = req.get("id")
    session.send(reply)


def main():
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if "--announce" in sys.argv:  # over a serial line, say when the line is ready before anything is sent
        out.write(b'{"ready": true}\n')
        out.flush()
    session = Session(json.loads(inp.readline()))
    session.out = out
    session.send({"ok": True, "id": "init", "pid": os.getpid(), "shell": session.shell})
    serve(session, inp)


if __name__ == "__main__":
    main()
