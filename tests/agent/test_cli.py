"""`dsv4 agent` against an endpoint (the dsv4 server over scripted completions): it prints each step, saves the
trajectory, and exits 0 only for a finished run."""

import sys

from dsv4.agent import Trajectory
from dsv4.cli import main
from dsv4.encoding.tokens import TOOL_CALLS_OPEN
from dsv4.server import create_app
from dsv4.server.background import serving
from tests.encoding.test_parse_strategies import render_calls
from tests.server.conftest import ScriptedBackend


def test_agent_command_runs_a_task_to_its_answer(real_tokenizer, make_sandbox, tmp_path, capsys):
    make_sandbox("process")  # skips where bubblewrap cannot run at all
    scripts = ["Make it.</think>" + render_calls([("write_file", {"path": "out.txt", "content": "done"})]),
               "Check it.</think>" + render_calls([("bash", {"command": "cat out.txt"})]),
               "Verified.</think>out.txt says done."]
    backend = ScriptedBackend(real_tokenizer, scripts)
    path = tmp_path / "run.json"
    with serving(create_app(backend)) as url:
        rc = main(["agent", "Write done to out.txt.", "--endpoint", f"{url}/v1", "--trajectory", str(path),
                   "--temperature", "0.5", "--seed", "11"])
    out = capsys.readouterr().out
    assert rc == 0 and "status: finished, 3 steps" in out and out.rstrip().endswith("out.txt says done.")
    assert {(p.temperature, p.seed) for _, p in backend.calls} == {(0.5, 11)}  # every model call samples alike
    assert "-> bash ok: exit code: 0 stdout: done" in out
    t = Trajectory.load(path)
    assert t.model == "dsv4-test" and t.status == "finished" and len(t.steps) == 3


def test_agent_command_offers_strict_tools_that_the_server_enforces(real_tokenizer, make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    scripts = ["Look.</think>" + render_calls([("bash", {"command": "echo hi"})]), "Done.</think>It printed hi."]
    backend = ScriptedBackend(real_tokenizer, scripts)
    with serving(create_app(backend)) as url:
        rc = main(["agent", "Say hi.", "--endpoint", f"{url}/v1", "--trajectory", str(tmp_path / "t.json"),
                   "--strict-tools"])
    assert rc == 0 and len(backend.calls) == 2
    for prompt, params in backend.calls:  # each call: the tools' strict form in the prompt, the server's grammar
        text = real_tokenizer.decode(prompt, skip_special_tokens=False)
        assert text.count('"additionalProperties": false') == 3 and '{"type": "null"}' in text
        assert params.grammar is not None and params.grammar.finish_from == TOOL_CALLS_OPEN


def test_agent_command_with_an_mcp_server(real_tokenizer, make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    scripts = ["Use the calculator.</think>" + render_calls([("add", {"a": 20, "b": 22})]), "</think>42."]
    backend = ScriptedBackend(real_tokenizer, scripts)
    with serving(create_app(backend)) as url:
        rc = main(["agent", "Add 20 and 22.", "--endpoint", f"{url}/v1", "--trajectory", str(tmp_path / "t.json"),
                   "--mcp", f"calc={sys.executable} -m tests.agent.mcp_server"])
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, captured.err
    assert "-> add ok: 42" in out and out.rstrip().endswith("42.")
    assert main(["agent", "x", "--endpoint", "http://127.0.0.1:9/v1", "--mcp", "calc"]) == 2  # checked first
    assert "--mcp 'calc': expected NAME=URL" in capsys.readouterr().err


def test_agent_command_reports_an_unreachable_endpoint(capsys):
    rc = main(["agent", "x", "--endpoint", "http://127.0.0.1:9/v1"])
    assert rc == 2 and "dsv4 agent:" in capsys.readouterr().err


def test_agent_command_resumes_a_run_from_its_trajectory_and_journal(real_tokenizer, make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    path, journal = tmp_path / "run.json", tmp_path / "sandbox.jsonl"
    scripts = ["Append.</think>" + render_calls([("bash", {"command": "echo once >> log.txt; date +%s%N"})]),
               "Look.</think>" + render_calls([("bash", {"command": "cat log.txt"})]),
               "</think>log.txt has one line."]
    with serving(create_app(ScriptedBackend(real_tokenizer, scripts))) as url:
        args = ["--endpoint", f"{url}/v1", "--trajectory", str(path), "--journal", str(journal)]
        assert main(["agent", "Append once.", *args, "--max-steps", "1"]) == 1  # stopped after the first step
        t = Trajectory.load(path)
        t.status, t.error = "running", None  # as if the process had died there
        t.save(path)
        capsys.readouterr()
        assert main(["agent", "--resume", *args]) == 0
    out = capsys.readouterr().out
    assert "(resumed at step 1)" in out and "-> bash ok: exit code: 0 stdout: once" in out
    t = Trajectory.load(path)
    assert t.status == "finished" and len(t.steps) == 3 and t.answer == "log.txt has one line."
    assert t.steps[1].tool_results[0].output == "exit code: 0\nstdout:\nonce\n"  # the append ran once
    assert main(["agent", "--resume", "--trajectory", str(path)]) == 2
    assert "--resume needs the --journal" in capsys.readouterr().err
    assert main(["agent", "x", "--resume", "--journal", str(journal)]) == 2
    assert "give a task, or --resume" in capsys.readouterr().err


def test_agent_command_uploads_files_before_the_run(real_tokenizer, make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    (tmp_path / "ws" / "config").mkdir(parents=True)
    (tmp_path / "ws" / "config" / "cabin.txt").write_text("port: 8142\n")
    (tmp_path / "extra.txt").write_text("hello\n")
    scripts = ["Read it.</think>" + render_calls([("bash", {"command": "cat config/cabin.txt /tmp/extra.txt"})]),
               "</think>The port is 8142."]
    with serving(create_app(ScriptedBackend(real_tokenizer, scripts))) as url:
        rc = main(["agent", "What is the port?", "--endpoint", f"{url}/v1", "--trajectory", str(tmp_path / "t.json"),
                   "--upload", str(tmp_path / "ws"), "--upload", f"{tmp_path / 'extra.txt'}:/tmp/extra.txt"])
    captured = capsys.readouterr()
    assert rc == 0 and "stdout: port: 8142 hello" in captured.out, captured.err
    assert main(["agent", "x", "--upload", str(tmp_path / "missing")]) == 2
    assert "no such file or directory on this machine" in capsys.readouterr().err
    assert main(["agent", "x", "--upload", f"{tmp_path / 'extra.txt'}:data"]) == 2
    assert "must be absolute" in capsys.readouterr().err
