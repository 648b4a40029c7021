"""The agent loop over a scripted model with tools in a real process sandbox: tool calls run and their results
come back, reasoning and tools are resent every step, failures reach the model without ending the run, budgets
end it with a status, and the trajectory is on disk after every step."""

import pytest

from dsv4.agent import Agent, AgentConfig, ClientError, Tool, ToolRegistry, Trajectory, sandbox_tools
from dsv4.agent.sandbox_tools import elide

from .conftest import ScriptedClient, call


def agent_in(sandbox, turns, **config) -> tuple[Agent, ScriptedClient]:
    client = ScriptedClient(turns)
    return Agent(client, ToolRegistry(sandbox_tools(sandbox)), AgentConfig(**config)), client


def test_a_task_with_tool_calls_to_a_final_answer(make_sandbox, tmp_path):
    sb = make_sandbox("process")
    agent, client = agent_in(sb, [
        ("", "Write the file, then check it.", [call("c1", "write_file", path="notes/a.txt", content="forty-two\n")]),
        ("Checking.", "Read it back.", [call("c2", "bash", command="cd notes && cat a.txt && pwd")]),
        ("", "cwd persisted?", [call("c3", "bash", command="pwd")]),
        ("The file says forty-two.", "Done.", []),
    ])
    path = tmp_path / "run.json"
    t = agent.run("Write forty-two to notes/a.txt and show it.", save_to=path)
    assert t.status == "finished" and t.answer == "The file says forty-two." and len(t.steps) == 4
    results = [r for s in t.steps for r in s.tool_results]
    assert [r.ok for r in results] == [True, True, True]
    assert "forty-two" in results[1].output and "exit code: 0" in results[1].output
    assert results[2].output.rstrip().endswith("/notes")  # the shell session carried the cd over
    roles = [m.role for m in t.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [m.tool_call_id for m in t.messages if m.role == "tool"] == ["c1", "c2", "c3"]
    # every request resends the tools and keeps every earlier reasoning (V4 is trained to see it)
    assert all([tool["function"]["name"] for tool in tools] == ["bash", "read_file", "write_file"]
               for _, tools in client.requests)
    last = client.requests[-1][0]
    assert [m.get("reasoning_content") for m in last if m["role"] == "assistant"] == \
        ["Write the file, then check it.", "Read it back.", "cwd persisted?"]
    assert Trajectory.load(path) == t


def test_failures_reach_the_model_and_the_run_goes_on(make_sandbox):
    sb = make_sandbox("process")
    agent, client = agent_in(sb, [
        ("", None, [call("c1", "bash", command="echo partial; echo oops >&2; exit 3")]),
        ("", None, [call("c2", "bash", cmd="ls")]),  # wrong argument name
        ("", None, [{"id": "c3", "type": "function", "function": {"name": "bash", "arguments": "{not json"}}]),
        ("", None, [call("c4", "browse", url="x")]),  # no such tool
        ("", None, [call("c5", "read_file", path="/nonexistent/file")]),
        ("gave up", None, []),
    ])
    t = agent.run("try things")
    assert t.status == "finished" and t.answer == "gave up"
    r = [s.tool_results[0] for s in t.steps[:-1]]
    assert not any(x.ok for x in r)
    assert "exit code: 3" in r[0].output and "partial" in r[0].output and "oops" in r[0].output  # output kept
    assert "command" in r[1].output and "invalid arguments for bash" in r[1].output
    assert "not valid JSON" in r[2].output
    assert "no tool 'browse'" in r[3].output and "bash, read_file, write_file" in r[3].output
    assert "cannot read /nonexistent/file" in r[4].output
    assert [m["content"] for m in client.requests[-1][0] if m["role"] == "tool"] == [x.output for x in r]


@pytest.mark.parametrize("config, status, says", [
    ({"max_steps": 2}, "limits_exceeded", "max_steps=2"),
    ({"max_tokens": 200}, "limits_exceeded", "max_tokens=200"),
])
def test_budgets_end_the_run_with_a_status(make_sandbox, tmp_path, config, status, says):
    sb = make_sandbox("process")
    agent, client = agent_in(sb, [("", None, [call(f"c{i}", "bash", command="true")]) for i in range(5)], **config)
    path = tmp_path / "run.json"
    t = agent.run("loop forever", save_to=path)
    assert t.status == status and says in t.error and len(t.steps) == 2
    assert Trajectory.load(path).status == status


def test_an_endpoint_failure_ends_the_run_and_keeps_what_was_done(tmp_path):
    class FailingSecond(ScriptedClient):
        def complete(self, messages, tools):
            if self.requests:
                raise ClientError("http://x/v1/chat/completions: HTTP 503: overloaded", 503)
            return super().complete(messages, tools)

    echo = Tool("echo", "echo", {"type": "object", "properties": {"text": {"type": "string"}}}, lambda text: text)
    client = FailingSecond([("", None, [call("c1", "echo", text="hi")])])
    path = tmp_path / "run.json"
    t = Agent(client, ToolRegistry([echo])).run("x", save_to=path)
    assert t.status == "error" and "503" in t.error
    assert t.steps[0].tool_results[0].output == "hi" and Trajectory.load(path).messages == t.messages


def test_an_answer_cut_at_max_tokens_is_marked():
    t = Agent(ScriptedClient([("half an answ", "hm", [], "length")]), ToolRegistry([])).run("x")
    assert t.status == "length" and t.answer == "half an answ"


def test_tool_names_are_unique_and_output_is_elided():
    tool = Tool("t", "", {"type": "object"}, lambda: "")
    with pytest.raises(ValueError, match="two tools are named 't'"):
        ToolRegistry([tool, tool])
    text = "a" * 50 + "b" * 50
    short = elide(text, 20)
    assert short.startswith("a" * 10) and short.endswith("b" * 10) and "80 characters elided" in short
    assert elide("abc", 20) == "abc"


def test_strict_tools_take_every_property_and_a_null_leaves_an_optional_one_out():
    seen = []
    tool = Tool("grep", "Search.", {"type": "object", "properties": {
        "pattern": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}}, "required": ["pattern"]},
        lambda pattern, limit=None: seen.append((pattern, limit)) or "ok")
    registry = ToolRegistry([tool])
    params = registry.schemas(strict=True)[0]["function"]["parameters"]
    assert registry.schemas(strict=True)[0]["function"]["strict"] is True
    assert params["required"] == ["pattern", "limit"] and params["additionalProperties"] is False
    assert params["properties"]["limit"] == {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}
    assert "strict" not in registry.schemas()[0]["function"]  # the plain form unchanged
    assert registry.call("grep", '{"pattern": "x", "limit": null}').ok  # null: not given
    assert registry.call("grep", '{"pattern": "x", "limit": 3}').ok
    assert seen == [("x", None), ("x", 3)]
    out = registry.call("grep", '{"pattern": null}')  # a required one is never dropped: the check names it
    assert not out.ok and "pattern" in out.text
