"""The command journal: durable records, resume with replay of the executed prefix, then live."""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from dsv4.sandbox import JournalMismatch, Sandbox, SandboxError
from dsv4.sandbox.journal import read_journal

from .procs import host_processes_with

CALLS = [
    "echo run >> runs.log; python3 -c 'import uuid; print(uuid.uuid4())'",
    "mkdir -p out && cd out && export STAGE=built && echo artefact > a.txt && wc -l < ../runs.log",
]


def test_resume_replays_the_prefix_without_running_it(make_sandbox, tmp_path):
    journal = tmp_path / "j.jsonl"
    sb = make_sandbox(journal=journal)
    recorded = [sb.run_shell(c, timeout=10) for c in CALLS]
    sb.write_file("/workspace/note", "n")
    sb.close()

    resumed = Sandbox.resume(journal)
    try:
        replayed = [resumed.run_shell(c, timeout=10) for c in CALLS]
        assert replayed == recorded  # same uuid: read from the journal, not run again
        resumed.write_file("/workspace/note", "n")
        live = resumed.run_shell("cat ../runs.log | wc -l; pwd; echo $STAGE; cat a.txt ../note", timeout=10)
        assert live.stdout == "1\n/workspace/out\nbuilt\nartefact\nn"
    finally:
        resumed.close()
    _, records = read_journal(journal)
    assert [r.op for r in records] == ["run_shell", "run_shell", "write_file", "run_shell"]


def test_resume_rejects_a_diverging_call(make_sandbox, tmp_path):
    journal = tmp_path / "j.jsonl"
    sb = make_sandbox(journal=journal)
    sb.run_shell("echo a", timeout=10)
    sb.close()
    with Sandbox.resume(journal) as resumed:
        with pytest.raises(JournalMismatch, match="seq=0"):
            resumed.run_shell("echo b", timeout=10)


def test_resume_after_the_records_a_caller_already_has(make_sandbox, tmp_path):
    """`done=k`: the first k records are the caller's (an agent's trajectory holds their results); the calls
    recorded after them are answered from the journal, and `journal_position` says how far the calls got."""
    journal = tmp_path / "j.jsonl"
    sb = make_sandbox(journal=journal)
    first, second = (sb.run_shell(c, timeout=10) for c in CALLS)
    assert sb.journal_position == 2
    sb.close()
    with Sandbox.resume(journal, done=1) as resumed:
        assert resumed.journal_position == 1
        assert resumed.run_shell(CALLS[1], timeout=10) == second  # answered from record 1, not run again
        assert resumed.journal_position == 2
        assert resumed.run_shell("cat ../runs.log; echo $STAGE", timeout=10).stdout == "run\nbuilt\n"
        assert resumed.journal_position == 3
    with pytest.raises(SandboxError, match="done=5: .* holds 3 records"):
        Sandbox.resume(journal, done=5)


def test_a_restored_sandbox_journals_its_start_and_resumes_to_it(make_sandbox, tmp_path):
    sb = make_sandbox()
    sb.run_shell("mkdir sub && echo base > sub/a && cd sub && export PHASE=one", timeout=10)
    sb.snapshot()
    sb.run_shell("echo more > b", timeout=10)
    journal = tmp_path / "fork.jsonl"
    with Sandbox.restore(sb.snapshot(), journal=journal) as fork:
        assert fork.journal_position == 2  # the two layers it started from
        recorded = fork.run_shell("echo fork >> a; date +%s%N", timeout=10)
    _, records = read_journal(journal)
    assert [r.op for r in records] == ["restore", "restore", "run_shell"]
    with Sandbox.resume(journal) as resumed:  # restore records are state, not calls to answer
        assert resumed.run_shell("echo fork >> a; date +%s%N", timeout=10) == recorded
        out = resumed.run_shell("pwd; echo $PHASE; cat a b", timeout=10).stdout
        assert out == "/workspace/sub\none\nbase\nfork\nmore\n"
    assert sb.run_shell("cat a", timeout=10).stdout == "base\n"  # the original is untouched


def test_journal_refuses_to_overwrite(make_sandbox, tmp_path):
    journal = tmp_path / "j.jsonl"
    make_sandbox(journal=journal).run_shell("true", timeout=10)
    with pytest.raises(Exception, match="already has records"):
        Sandbox.create("process", journal=journal)


CHILD = textwrap.dedent("""
    import json, sys
    from dsv4.sandbox import Sandbox, BackendUnavailable
    try:
        sb = Sandbox.create("process", journal=sys.argv[1])
    except BackendUnavailable as e:
        print(json.dumps({"unavailable": str(e)}), flush=True)
        sys.exit(0)
    for cmd in json.loads(sys.argv[2]):
        print(sb.run_shell(cmd, timeout=60).model_dump_json(), flush=True)
""")


def test_kill_9_mid_run_then_resume(tmp_path):
    journal = tmp_path / "j.jsonl"
    inflight = "echo started >> ../runs.log; sleep 977.5"
    cmds = [*CALLS, inflight]
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(journal), json.dumps(cmds)],
                             stdout=subprocess.PIPE, text=True)
    first = json.loads(child.stdout.readline())
    if "unavailable" in first:
        pytest.skip(first["unavailable"])
    seen = [first, json.loads(child.stdout.readline())]
    deadline = time.monotonic() + 30
    while not host_processes_with("sleep 977.5") and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()  # SIGKILL: no cleanup runs in the child
    child.wait()

    with Sandbox.resume(journal) as sb:
        replayed = [sb.run_shell(c, timeout=10).model_dump(mode="json") for c in CALLS]
        assert replayed == seen
        # The in-flight command never finished, so it has no record: its effects are not restored...
        assert sb.read_file("../runs.log") == b"run\n"
        # ...and it runs live when issued again; what finished before the kill ran exactly once.
        rerun = sb.run_shell(inflight.replace("sleep 977.5", "cat ../runs.log"), timeout=10)
        assert rerun.stdout == "run\nstarted\n"
    assert host_processes_with("sleep 977.5") == []
