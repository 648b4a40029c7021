"""A run forked mid-way into independent runs (each in a sandbox of its own), and a run killed with SIGKILL that
resumes from its trajectory and sandbox journal without any tool call's effect happening twice."""

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from dsv4.agent import Agent, Tool, ToolRegistry, Trajectory, sandbox_tools
from dsv4.sandbox.journal import read_journal

from ..sandbox.procs import host_processes_with
from .conftest import ScriptedClient, call


def listing_of(trajectory: Trajectory) -> str:
    return trajectory.steps[-2].tool_results[0].output


def test_two_forks_from_one_point_diverge_without_seeing_each_others_files(make_sandbox, tmp_path):
    sb = make_sandbox("process")
    parent = Agent(ScriptedClient([
        ("", "Set up.", [call("c1", "bash", command="mkdir work && cd work && echo base > shared.txt && "
                                                    "export PHASE=forked")]),
        ("", None, [call("c2", "write_file", path="/workspace/work/parent.txt", content="parent only\n")]),
        ("parent done", None, []),
    ]), ToolRegistry(sandbox_tools(sb)), sandbox=sb)
    run = parent.start("Make files.", save_to=tmp_path / "parent.json")
    assert run.step()
    forks = {}
    for name in ("a", "b"):
        client = ScriptedClient([
            ("", None, [call(f"{name}1", "write_file", path=f"/workspace/work/{name}.txt", content=f"only {name}\n")]),
            ("", None, [call(f"{name}2", "bash", command="pwd; echo $PHASE; ls")]),
            (f"branch {name} done", None, []),
        ])
        start = time.perf_counter()
        forks[name] = run.fork(client=client, save_to=tmp_path / f"{name}.json")
        print(f"fork {name}: {(time.perf_counter() - start) * 1000:.0f} ms (trajectory, sandbox snapshot + restore)")
    try:
        for _ in range(3):  # the branches and the parent go on interleaved
            for r in (forks["a"], forks["b"], run):
                r.step()
        shared = run.trajectory.messages[:4]  # system, user, the first reply and its tool result
        for name, other in (("a", "b"), ("b", "a")):
            t = Trajectory.load(tmp_path / f"{name}.json")
            assert t.status == "finished" and t.answer == f"branch {name} done" and t.forked_at == 1
            assert t.messages[:4] == shared and len(t.steps) == 4
            seen = listing_of(t).split()
            # the shell session (cwd, exported PHASE) and the workspace came with the fork, not the others' files
            assert seen[4:] == ["/workspace/work", "forked", f"{name}.txt", "shared.txt"]
            assert f"{other}.txt" not in seen and "parent.txt" not in seen
        assert run.trajectory.answer == "parent done"
        assert sb.run_shell("ls /workspace/work", timeout=10).stdout.split() == ["parent.txt", "shared.txt"]
    finally:
        for r in forks.values():
            r.close()
    assert all(r.agent.sandbox.closed for r in forks.values()) and not sb.closed


def test_a_fork_is_resumable_from_its_own_journal(make_sandbox, tmp_path):
    sb = make_sandbox("process")
    run = Agent(ScriptedClient([("", None, [call("c1", "bash", command="echo base > f")])]),
                ToolRegistry(sandbox_tools(sb)), sandbox=sb).start("t")
    run.step()
    with run.fork(client=ScriptedClient([("", None, [call("x1", "bash", command="echo fork >> f; date +%s%N")])]),
                  save_to=tmp_path / "fork.json", journal=tmp_path / "fork.jsonl") as fork:
        fork.step()
        stamp = fork.trajectory.steps[-1].tool_results[0].output
    # the fork's trajectory without its last step, as if it had been killed while that call ran
    t = Trajectory.load(tmp_path / "fork.json")
    t.steps[-1].tool_results.clear()
    t.partial, t.steps, t.messages = t.steps[-1], t.steps[:-1], t.messages[:-1]
    t.journal_seq = 1  # the one restore record: the call's record is past what the trajectory knows
    t.save(tmp_path / "fork.json")
    agent = Agent(ScriptedClient([("done", None, [])]), ToolRegistry([]))
    with agent.resume(tmp_path / "fork.json", journal=tmp_path / "fork.jsonl") as resumed:
        t = resumed.finish()
        assert resumed.agent.sandbox.run_shell("cat f", timeout=10).stdout == "base\nfork\n"
    assert t.status == "finished" and t.steps[-2].tool_results[0].output == stamp  # answered from the journal


def test_fork_needs_the_sandbox():
    run = Agent(ScriptedClient([]), ToolRegistry([])).start("t")
    with pytest.raises(ValueError, match="Agent\\(..., sandbox=...\\)"):
        run.fork()


def dies_after(tool: Tool, dying: list[bool]) -> Tool:
    """`tool`, whose process dies right after its effect (before its result is saved) while `dying[0]`."""
    def fn(**kwargs):
        out = tool.fn(**kwargs)
        if dying[0]:
            raise KeyboardInterrupt
        return out
    return dataclasses.replace(tool, fn=fn)


@pytest.mark.parametrize("journaled", [True, False])
def test_an_interrupted_call_outside_the_journal_is_not_made_again(make_sandbox, tmp_path, journaled):
    """A tool whose effect is on the host (a ledger file) dies right after its effect: on resume it is not called
    again and the model is told; the call after it runs."""
    journal = tmp_path / "sandbox.jsonl"
    sb = make_sandbox("process", journal=journal if journaled else None)
    ledger, dying = tmp_path / "ledger.txt", [True]

    def pay(amount: int) -> str:
        with open(ledger, "a") as f:
            f.write(f"{amount}\n")
        return "paid"

    schema = {"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]}

    def tools_for(s):
        return ToolRegistry([*sandbox_tools(s), dies_after(Tool("pay", "Pay.", schema, pay), dying)])

    path = tmp_path / "run.json"
    client = ScriptedClient([("", None, [call("p1", "pay", amount=5), call("b1", "bash", command="echo after >> f")])])
    with pytest.raises(KeyboardInterrupt):
        Agent(client, tools_for(sb), sandbox=sb, tools_for=tools_for).start("pay", save_to=path).step()
    dying[0] = False
    resumed_client = ScriptedClient([("done", None, [])])
    agent = Agent(resumed_client, tools_for(sb), sandbox=sb, tools_for=tools_for)
    with agent.resume(path, journal=journal) if journaled else contextlib.nullcontext(agent.resume(path)) as run:
        t = run.finish()
        assert run.agent.sandbox.read_file("f") == b"after\n"
    assert ledger.read_text() == "5\n"  # paid once
    results = t.steps[0].tool_results
    assert [r.call_id for r in results] == ["p1", "b1"] and t.status == "finished" and results[1].ok
    assert not results[0].ok and "was not made again: it may or may not have taken effect" in results[0].output
    sent = [m["content"] for m in resumed_client.requests[0][0] if m["role"] == "tool"]
    assert sent == [r.output for r in results]  # the model is told


def test_without_a_journal_an_interrupted_bash_call_is_not_made_again(make_sandbox, tmp_path):
    sb, dying = make_sandbox("process"), [True]

    def tools_for(s):
        bash, *rest = sandbox_tools(s)
        return ToolRegistry([dies_after(bash, dying), *rest])

    path = tmp_path / "run.json"
    client = ScriptedClient([("", None, [call("b1", "bash", command="echo once >> f")])])
    with pytest.raises(KeyboardInterrupt):
        Agent(client, tools_for(sb), sandbox=sb, tools_for=tools_for).start("t", save_to=path).step()
    dying[0] = False
    t = Agent(ScriptedClient([("done", None, [])]), tools_for(sb), sandbox=sb).resume(path).finish()
    assert sb.read_file("f") == b"once\n" and "was not made again" in t.steps[0].tool_results[0].output


CHILD = textwrap.dedent("""
    import dataclasses, json, os, signal, sys
    from dsv4.agent import Agent, Completion, Message, ToolRegistry, sandbox_tools
    from dsv4.sandbox import BackendUnavailable, Sandbox

    class ScriptedClient:  # conftest's, without the test suite's imports (torch: seconds to start)
        model = "scripted"

        def __init__(self, turns):
            self.turns = turns

        def complete(self, messages, tools):
            content, reasoning, calls = self.turns.pop(0)
            return Completion(Message(role="assistant", content=content, reasoning_content=reasoning,
                                      tool_calls=calls or None), "tool_calls" if calls else "stop")

    trajectory, journal, kill_after = sys.argv[2], sys.argv[3], sys.argv[5]
    with open(sys.argv[4]) as f:  # not on the command line, where the test looks for the command's processes
        turns = json.load(f)
    try:
        sb = Sandbox.create("process", journal=journal)
    except BackendUnavailable as e:
        print(json.dumps({"unavailable": str(e)}), flush=True)
        sys.exit(0)

    def killing(bash):  # dies right after a command is journaled, before the trajectory has its result
        def fn(**kw):
            out = bash.fn(**kw)
            if kill_after and kill_after in kw["command"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return dataclasses.replace(bash, fn=fn)

    tools = sandbox_tools(sb)
    agent = Agent(ScriptedClient(turns), ToolRegistry([killing(tools[0]), *tools[1:]]), sandbox=sb)
    print(json.dumps({"started": True}), flush=True)
    agent.run("Append two lines.", save_to=trajectory)
    print(json.dumps({"finished": True}), flush=True)
""")
FIRST = "echo one >> effects.log"


@pytest.mark.parametrize("second, kill_after", [
    ("echo two >> effects.log; sleep 2.0417", None),  # SIGKILL from outside while the command runs
    ("echo two >> effects.log; date +%s%N", "date"),  # SIGKILL once its record is journaled, before the trajectory
])
def test_a_run_killed_mid_way_resumes_without_repeating_a_side_effect(tmp_path, second, kill_after):
    trajectory, journal = tmp_path / "run.json", tmp_path / "sandbox.jsonl"
    turns = [["", None, [call("c1", "bash", command=FIRST)]], ["", None, [call("c2", "bash", command=second)]],
             ["never asked", None, []]]
    (tmp_path / "turns.json").write_text(json.dumps(turns))
    child = subprocess.Popen([sys.executable, "-c", CHILD, "", str(trajectory), str(journal),
                              str(tmp_path / "turns.json"), kill_after or ""], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    first = json.loads(child.stdout.readline())
    if "unavailable" in first:
        pytest.skip(first["unavailable"])
    if kill_after is None:
        deadline = time.monotonic() + 60
        while not host_processes_with("sleep 2.0417") and time.monotonic() < deadline:
            time.sleep(0.01)
        child.kill()
    assert child.wait(timeout=60) == -9, child.stdout.read()
    deadline = time.monotonic() + 30  # the sandbox dies with the run (its parent-death signal is asynchronous)
    while host_processes_with("sleep 2.0417") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host_processes_with("sleep 2.0417") == []

    killed = Trajectory.load(trajectory)
    assert killed.status == "running" and len(killed.steps) == 1 and killed.journal_seq == 1
    assert killed.partial is not None and killed.partial.tool_results == []  # c2 was in flight
    _, before = read_journal(journal)
    assert len(before) == (1 if kill_after is None else 2)

    client = ScriptedClient([("Both lines are in.", None, [])])
    with Agent(client, ToolRegistry([])).resume(trajectory, journal=journal) as run:
        t = run.finish()
        effects = run.agent.sandbox.read_file("effects.log")
    assert effects == b"one\ntwo\n"  # each append happened once
    assert t.status == "finished" and t.answer == "Both lines are in." and len(t.steps) == 3
    assert [r.call_id for s in t.steps for r in s.tool_results] == ["c1", "c2"]
    _, records = read_journal(journal)
    assert [r.request["cmd"] for r in records if r.op == "run_shell"] == [FIRST, second]
    if kill_after is not None:  # the result the killed run got is the one the resumed run has: not run again
        assert records[1].result["stdout"] in t.steps[1].tool_results[0].output
    # the model saw c2's result once, then answered
    assert [m["tool_call_id"] for m in client.requests[0][0] if m["role"] == "tool"] == ["c1", "c2"]
