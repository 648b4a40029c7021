"""Guest agent: the one program the host starts inside a sandbox (the DSec "chronus" role).

It speaks JSON lines on its stdin/stdout, runs each command in a fresh shell that inherits the session's cwd
and exported variables, caps output, applies the limits to every command, and on timeout kills every
process the command started. Bulk data moves in chunk lines both ways (see `dsv4.sandbox.channel`). The agent
is not dumpable, so the commands it runs (same uid) cannot take its pipes to the host, and it opens files
without blocking on FIFOs or devices. Stdlib only: it runs under the sandbox's own `python3`, never imports
dsv4, and does nothing at import.
"""

import base64
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import stat
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
CHUNK = 256 << 10
"""Payload bytes per data line (the host refuses lines over 4 MiB)."""
PART_BYTES = 1 << 20
"""Encoded bytes per part line of a large reply field."""
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


class Session:
    """Shell state that survives between commands, plus the limits applied to each of them."""

    def __init__(self, init):
        self.cwd = init["cwd"]
        self.env = dict(init["env"])
        self.limits = init["limits"]
        self.shell = init.get("shell") or ("/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh")
        self.private_dir = init.get("private_dir") or tempfile.mkdtemp(prefix="dsv4-agent-")
        self.forwards = {}
        self.uploads = {}
        self.write_lock = threading.Lock()
        self.out = None
        self.host_fds = ()
        """The agent's ends of its channel to the host, closed in every command before it becomes dumpable."""
        self.prctl = None

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self.write_lock:
            self.out.write(data)
            self.out.flush()

    def send_data(self, rid, chunk):
        self.send({"id": rid, "event": "data", "data": b64(chunk)})

    def send_parts(self, rid, key, items):
        """A large dict or list field of a reply, as part lines of about PART_BYTES each."""
        batch, size = ({} if isinstance(items, dict) else []), 0
        for item in (items.items() if isinstance(items, dict) else items):
            batch.update([item]) if isinstance(batch, dict) else batch.append(item)
            size += len(json.dumps(item))
            if size >= PART_BYTES:
                self.send({"id": rid, "event": "part", key: batch})
                batch, size = type(batch)(), 0
        self.send({"id": rid, "event": "part", key: batch})


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


def command_pids(root, tag):
    """Live pids of one command: its descendants (the shell is their subreaper, so double-forked daemons stay
    below it while it lives), its process group, and whatever carries its tag in the environment."""
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
    """Kill every process of the command; the shell, the subreaper of the rest, dies last, so nothing is
    orphaned out of reach while the others are being found."""
    stop_then_kill(lambda: command_pids(proc.pid, tag) | ({proc.pid} if proc.poll() is None else set()),
                   last=proc.pid)


def stop_then_kill(find, last=None):
    """SIGSTOP what `find()` returns until nothing new appears (fork bombs included), SIGKILL all of it
    (`last` at the end), then whatever is still found: a fork that was in flight. Returns the stopped pids."""
    stopped = set()
    for _ in range(200):
        pids = find() - stopped
        if not pids:
            break
        signal_all(pids, signal.SIGSTOP)
        stopped |= pids
        time.sleep(0.002)
    signal_all(stopped - {last}, signal.SIGKILL)
    signal_all(stopped & {last}, signal.SIGKILL)
    for _ in range(200):
        left = find()
        if not left:
            break
        signal_all(left, signal.SIGKILL)
        time.sleep(0.005)
    return stopped


def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
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


def b64(data):
    return base64.b64encode(bytes(data)).decode()


def open_regular(path, flags, mode=0o644):
    """An fd of `path` when it is a regular file. FIFOs, devices, sockets and directories are refused by
    name, without blocking on them: O_NONBLOCK for the open (cleared again for a regular file), then fstat."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == 6:  # ENXIO: a FIFO without a reader, or a device without its driver
            not_regular(path, os.stat(path).st_mode)
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        not_regular(path, st.st_mode)
    os.set_blocking(fd, True)
    return fd


def not_regular(path, mode):
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    raise OSError(21 if stat.S_ISDIR(mode) else 22, f"{path!r} is {kind}: only regular files are read or written")


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


def op_stop_others(session, req):
    """Kill every process of the sandbox but the agent and its ancestors (e.g. daemons, before a verifier)."""
    keep, p = {os.getpid()}, os.getpid()
    while p > 1:
        p = int(proc_stat(p)[1] or 0)
        keep.add(p)

    def others():
        pids = {int(n) for n in os.listdir("/proc") if n.isdigit()} - keep
        return {pid for pid in pids if proc_stat(pid)[0] not in (None, "Z", "X") and not is_kernel_thread(pid)}
    return {"killed": len(stop_then_kill(others))}


def proc_stat(pid):
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, session, tty, tpgid, flags, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return [None, None]


def is_kernel_thread(pid):
    fields = proc_stat(pid)
    return len(fields) > 6 and bool(int(fields[6]) & 0x00200000)  # PF_KTHREAD


def resolve(session, path):
    return path if os.path.isabs(path) else os.path.join(session.cwd, path)


def op_read(session, req):
    """Stream a regular file as data lines; more than max_bytes is an error (EFBIG)."""
    limit = req["max_bytes"]
    with os.fdopen(open_regular(resolve(session, req["path"]), os.O_RDONLY), "rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise OSError(27, f"file larger than max_bytes={limit}")
        sent = 0
        while chunk := f.read(min(CHUNK, limit + 1 - sent)):
            sent += len(chunk)
            if sent > limit:  # it grew while being read
                raise OSError(27, f"file larger than max_bytes={limit}")
            session.send_data(req["id"], chunk)
    return {}


class WriteUpload:
    """A file written chunk by chunk as the host sends it; the first error is kept and reported at the end."""

    def __init__(self, session, req):
        path = resolve(session, req["path"])
        if req.get("mkdirs"):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.f = os.fdopen(open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, req.get("mode", 0o644)), "wb")

    def feed(self, data):
        self.f.write(data)

    def finish(self):
        self.f.close()
        return {}

    def abort(self):
        self.f.close()


class UntarUpload:
    """A tar stream unpacked as it arrives: chunks go through a pipe to a thread extracting member by member."""

    def __init__(self, session, req):
        self.dest = resolve(session, req["path"])
        os.makedirs(self.dest, exist_ok=True)
        r, w = os.pipe()
        self.pipe = os.fdopen(w, "wb")
        self.error = None
        self.thread = threading.Thread(target=self._extract, args=(os.fdopen(r, "rb"),), daemon=True)
        self.thread.start()

    def _extract(self, pipe):
        try:
            with pipe, tarfile.open(fileobj=pipe, mode="r|*") as tar:
                for m in tar:
                    if m.isfile() or m.isdir() or m.issym():
                        clear_for(os.path.join(self.dest, m.name), m)
                        tar.extract(m, self.dest, **trusted())
        except Exception as e:  # noqa: BLE001 - reported to the host as the upload's result
            self.error = e

    def feed(self, data):
        try:
            self.pipe.write(data)
        except BrokenPipeError:  # the extraction failed: its error is the result
            pass

    def finish(self):
        self.abort()
        if self.error is not None:
            raise self.error
        return {}

    def abort(self):
        try:
            self.pipe.close()
        except OSError:
            pass
        self.thread.join()


def clear_for(target, member):
    """Remove what is in the way of a member that is not a directory: a FIFO or device in its place would
    block the extraction for good, and a link would be written through."""
    try:
        st = os.lstat(target)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode) and not (member.isfile() and stat.S_ISREG(st.st_mode)):
        os.unlink(target)


def trusted():
    # Inside the sandbox nothing can leave it; newer Pythons must not filter absolute links out.
    return {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class DataWriter:
    """A write-only file object sending what is written as data lines of CHUNK bytes."""

    def __init__(self, session, rid):
        self.session, self.rid, self.buf = session, rid, bytearray()

    def write(self, data):
        self.buf += data
        while len(self.buf) >= CHUNK:
            self.session.send_data(self.rid, self.buf[:CHUNK])
            del self.buf[:CHUNK]
        return len(data)

    def flush(self):
        if self.buf:
            self.session.send_data(self.rid, self.buf)
            self.buf = bytearray()


def add_entry(tar, path, arcname):
    """Add one path without recursion. A regular file is opened without blocking and archived from that fd,
    so a FIFO swapped in after a listing is archived as a FIFO, never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:  # a link (ELOOP), a socket, or unreadable: archived from lstat below, or skipped
        fd = None
    if fd is not None and not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
    elif fd is not None:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            tar.addfile(tar.gettarinfo(arcname=arcname, fileobj=f), f)
        return
    try:
        info = tar.gettarinfo(path, arcname)
    except OSError:
        return
    if info is not None and not info.isreg():  # None: a socket
        tar.addfile(info)


def stream_tar(session, req, entries):
    """A tar of (path, arcname) entries streamed as data lines. A member that fails half-written fails the
    whole operation (the stream cannot take it back); one that cannot be opened is left out."""
    out = DataWriter(session, req["id"])
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in entries:
            add_entry(tar, path, arcname)
    out.flush()
    return {}


def op_tar(session, req):
    """A tar of a file or a tree (links kept as links), the root as ".", streamed as data lines."""
    root = resolve(session, req["path"])
    os.lstat(root)
    entries = [(root, ".")]
    if os.path.isdir(root) and not os.path.islink(root):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                full = os.path.join(dirpath, name)
                entries.append((full, os.path.relpath(full, root)))
    return stream_tar(session, req, entries)


def op_pack(session, req):
    """A tar of the listed paths (relative to `path`), each added without recursion, streamed."""
    root = resolve(session, req["path"])
    return stream_tar(session, req, [(os.path.join(root, rel), rel) for rel in req["paths"]])


def op_list(session, req):
    path = resolve(session, req["path"])
    entries = []
    with os.scandir(path) as it:
        for e in it:
            kind = "dir" if e.is_dir(follow_symlinks=False) else "link" if e.is_symlink() else "file"
            size = e.stat(follow_symlinks=False).st_size
            entries.append({"name": e.name, "kind": kind, "size": size})
    session.send_parts(req["id"], "entries", sorted(entries, key=lambda e: e["name"]))
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
    """Manifest of a tree: relative path -> [kind, size, mtime_ns, mode, link target], sent in parts."""
    root = resolve(session, req["path"])
    manifest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                manifest[os.path.relpath(full, root)] = entry_of(full)
            except OSError:
                continue
    session.send_parts(req["id"], "manifest", manifest)
    return {}


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
    session.send_parts(req["id"], "env", session.env)
    return {"cwd": session.cwd}


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


OPS = {"exec": op_exec, "read": op_read, "list": op_list, "tar": op_tar, "forward": op_forward,
       "scan": op_scan, "pack": op_pack, "remove": op_remove, "session": op_session, "unforward": op_unforward,
       "stop_others": op_stop_others}
UPLOADS = {"write": WriteUpload, "untar": UntarUpload}
"""Operations whose payload follows the request as chunk lines: each returns an object fed chunk by chunk."""


def serve(session, inp):
    """Commands run on their own threads (several may run at once); other operations run in turn, and
    uploads advance as their chunks arrive, interleaved with everything else."""
    for line in inp:
        req = json.loads(line)
        if req["op"] == "chunk":
            take_chunk(session, req)
        elif req["op"] in UPLOADS:
            start_upload(session, req)
        elif req["op"] == "exec":
            threading.Thread(target=answer, args=(session, req), daemon=True).start()
        else:
            answer(session, req)


def start_upload(session, req):
    try:
        session.uploads[req["id"]] = [UPLOADS[req["op"]](session, req), None]
    except Exception as e:  # noqa: BLE001 - reported once the payload has been consumed
        session.uploads[req["id"]] = [None, e]


def take_chunk(session, req):
    upload = session.uploads.get(req["id"])
    if upload is None:
        return
    sink, error = upload
    if req.get("abort"):  # the host gave up on it: nobody waits for an answer
        del session.uploads[req["id"]]
        if error is None:
            sink.abort()
        return
    if error is None:
        try:
            sink.feed(base64.b64decode(req["data"]))
        except Exception as e:  # noqa: BLE001 - e.g. ENOSPC: the rest of the payload is dropped
            upload[1] = e
            sink.abort()
    if req.get("end"):
        del session.uploads[req["id"]]
        answer(session, req, lambda: upload[0].finish() if upload[1] is None else raise_(upload[1]))


def raise_(e):
    raise e


def answer(session, req, run=None):
    try:
        reply = dict((run or (lambda: OPS[req["op"]](session, req)))(), ok=True)
    except OSError as e:
        reply = {"ok": False, "errno": e.errno, "error": f"{type(e).__name__}: {e}"[:4000]}
    except Exception as e:  # noqa: BLE001 - every failure goes back to the host, never kills the agent
        reply = {"ok": False, "errno": None, "error": f"{type(e).__name__}: {e}"[:4000]}
    reply["id"] = req.get("id")
    session.send(reply)


def main():
    prctl = load_prctl()
    if prctl is not None:  # before anything else: the commands share our uid, and must not reach our fds
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # `--fds R,W`: the channel on fds other than stdin/stdout, which a parent (bubblewrap's pid 1) also holds
    fds = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--fds=")), None)
    read_fd, write_fd = map(int, fds.split(",")) if fds else (os.dup(0), os.dup(1))
    inp = os.fdopen(read_fd, "rb")
    out = os.fdopen(write_fd, "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if "--announce" in sys.argv:  # over a serial line, say when the line is ready before anything is sent
        out.write(b'{"ready": true}\n')
        out.flush()
    session = Session(json.loads(inp.readline()))
    session.out, session.host_fds, session.prctl = out, (inp.fileno(), out.fileno()), prctl
    session.send({"ok": True, "id": "init", "pid": os.getpid(), "shell": session.shell})
    serve(session, inp)


if __name__ == "__main__":
    main()
