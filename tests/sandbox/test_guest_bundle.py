"""The guest agent shipped as one zipapp: the whole `guest` package inside, stdlib only, runnable on its own."""

import ast
import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile

from dsv4.sandbox import guest_bundle
from dsv4.sandbox.backends.bwrap import AGENT, make_state_dir
from dsv4.sandbox.backends.vm import SHARES, init_script
from dsv4.sandbox.config import ProcessConfig, SandboxSpec, VMConfig


def test_the_zipapp_holds_every_module_of_the_package():
    names = zipfile.ZipFile(io.BytesIO(guest_bundle.bundle())).namelist()
    modules = sorted(p.name for p in guest_bundle.PACKAGE.glob("*.py"))
    assert {"loop.py", "transfer.py", "forward.py"} <= set(modules)
    assert names == ["__main__.py", *(f"guest/{m}" for m in modules)]


def test_guest_modules_import_only_the_standard_library():
    for path in guest_bundle.PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            assert all(t in sys.stdlib_module_names for t in tops), f"{path.name} imports {tops}"


def test_every_backend_runs_the_file_the_state_dir_holds(tmp_path):
    """bwrap and runsc bind the state's guest/ at GUEST_DIR; the VM shares it over 9p at the same place."""
    state = make_state_dir(ProcessConfig(state_dir=tmp_path), os.getuid())
    assert (state / "guest" / guest_bundle.NAME).read_bytes() == guest_bundle.bundle()
    assert AGENT == f"{dict((tag, d) for tag, d, _ in SHARES)['guest']}/{guest_bundle.NAME}"
    script = init_script(SandboxSpec(backend=VMConfig()), ["python3"])
    assert f"python3 {AGENT} --announce" in script


def read_reply(out, rid):
    """(event lines, the reply) of request `rid`."""
    events = []
    while True:
        raw = out.readline()
        assert raw, "the agent exited before answering"
        line = json.loads(raw)
        if line["id"] == rid and "event" not in line:
            return events, line
        events.append(line)


def test_the_zipapp_serves_requests_without_site_packages(tmp_path):
    """`-I -S`: no dsv4, no site-packages; exec, session and tar go through loop, commands and transfer."""
    agent = guest_bundle.install(tmp_path)
    work, private = tmp_path / "work", tmp_path / "private"
    (work / "sub").mkdir(parents=True)
    private.mkdir()
    (work / "sub" / "f.txt").write_text("payload")
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(agent)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        def send(obj):
            proc.stdin.write((json.dumps(obj) + "\n").encode())
            proc.stdin.flush()

        send({"cwd": str(work), "env": {"PATH": os.environ["PATH"]}, "limits": {}, "private_dir": str(private)})
        assert read_reply(proc.stdout, "init")[1]["ok"]
        send({"op": "exec", "id": 1, "cmd": "echo hi; cd sub; export X=1", "timeout": 30, "max_output_bytes": 100})
        events, reply = read_reply(proc.stdout, 1)
        assert reply["ok"] and reply["exit_code"] == 0 and reply["cwd"] == str(work / "sub")
        assert [base64.b64decode(e["data"]) for e in events] == [b"hi\n"]
        send({"op": "session", "id": 2})
        events, reply = read_reply(proc.stdout, 2)
        assert events[0]["env"]["X"] == "1"
        send({"op": "tar", "id": 3, "path": "f.txt"})
        events, reply = read_reply(proc.stdout, 3)
        data = b"".join(base64.b64decode(e["data"]) for e in events)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            assert tar.extractfile(".").read() == b"payload"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()
