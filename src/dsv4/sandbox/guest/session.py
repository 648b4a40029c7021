"""The session: shell state kept between commands, and the writer of every line sent to the host."""

import base64
import json
import os
import tempfile
import threading

PART_BYTES = 1 << 20
"""Encoded bytes per part line of a large reply field."""


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


def b64(data):
    return base64.b64encode(bytes(data)).decode()


def resolve(session, path):
    return path if os.path.isabs(path) else os.path.join(session.cwd, path)


def op_session(session, req):
    """Set the shell state when given (restore, resume); always answer with the current one."""
    session.cwd = req.get("cwd") or session.cwd
    session.env = dict(req.get("env") or session.env)
    session.send_parts(req["id"], "env", session.env)
    return {"cwd": session.cwd}
