"""Finding a command's processes (or every process but the agent) and stopping them all, fork bombs included."""

import os
import signal
import time

TAG_VAR = "DSV4_CMD_TAG"
"""Environment variable marking every process of one command, whatever it reparents to."""


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
