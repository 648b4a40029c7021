"""The request loop: reads the host's JSON lines, dispatches each to its operation, and answers."""

import base64
import json
import os
import sys
import threading

from .commands import PR_SET_DUMPABLE, load_prctl, op_exec
from .files import WriteUpload, op_list, op_read, op_remove, op_scan
from .forward import op_forward, op_unforward
from .processes import op_stop_others
from .session import Session, op_session
from .transfer import UntarUpload, op_pack, op_tar

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
