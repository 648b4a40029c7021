"""The agent runs a tool call the model wrote as text (salvage on by default), records the warning in the
trajectory, and leaves look-alikes and undeclared tools alone; `salvage_tool_calls=False` turns it off."""

import json

import httpx

from dsv4.agent import Agent, AgentConfig, Tool, ToolRegistry, Trajectory
from dsv4.agent.client import OpenAIClient

from .conftest import ScriptedClient

ECHO = Tool("echo", "echo the text", {"type": "object", "properties": {"text": {"type": "string"}},
                                      "required": ["text"]}, lambda text: f"echo: {text}")
TEXT_CALL = 'Calling the tool.\n<tool_call name="echo">{"text": "hi"}</tool_call>'


def run(turns, **config) -> Trajectory:
    return Agent(ScriptedClient(turns), ToolRegistry([ECHO]), AgentConfig(**config)).run("say hi")


def test_a_call_written_as_text_runs_and_the_trajectory_says_so(tmp_path):
    t = run([(TEXT_CALL, "r", []), ("done", "r2", [])])
    assert t.status == "finished" and t.answer == "done"
    [result] = t.steps[0].tool_results
    assert result.name == "echo" and result.ok and result.output == "echo: hi"
    reply = t.messages[2]
    assert reply.content == TEXT_CALL  # kept as written
    assert reply.tool_calls[0].id == result.call_id and json.loads(reply.tool_calls[0].function.arguments) == \
        {"text": "hi"}
    [warning] = t.steps[0].warnings
    assert warning["type"] == "tool_call_salvaged" and warning["tool"] == "echo" and "<tool_call" in warning["text"]
    assert t.messages[3].role == "tool" and t.messages[3].tool_call_id == result.call_id
    path = tmp_path / "t.json"
    t.save(path)
    assert Trajectory.load(path).steps[0].warnings == [warning]


def test_off_when_configured():
    t = run([(TEXT_CALL, "r", [])], salvage_tool_calls=False)
    assert t.status == "finished" and t.answer == TEXT_CALL and t.steps[0].warnings == []


def test_look_alikes_and_unknown_tools_end_the_run_as_an_answer():
    for content in (f"```\n{TEXT_CALL}\n```", TEXT_CALL.replace('"echo"', '"rm_rf"'),
                    'Use echo({"text": "hi"}) to greet.'):
        t = run([(content, "r", [])])
        assert t.status == "finished" and t.answer == content and not t.steps[0].tool_results


def test_invalid_arguments_are_not_run_but_reported():
    t = run([('<tool_call name="echo">{"txt": "hi"}</tool_call>', "r", [])])
    assert t.status == "finished" and not t.steps[0].tool_results
    assert t.steps[0].warnings[0]["type"] == "tool_call_not_salvaged"


def test_the_endpoints_warnings_are_recorded():
    def answer(request):
        return httpx.Response(200, json={
            "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "x_dsv4_warnings": [{"type": "tool_call_salvaged", "tool": "echo"}]})

    client = OpenAIClient("http://x/v1", "m", http=httpx.Client(transport=httpx.MockTransport(answer)))
    t = Agent(client, ToolRegistry([ECHO])).run("x")
    assert t.steps[0].warnings == [{"type": "tool_call_salvaged", "tool": "echo"}]
