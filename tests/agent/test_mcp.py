"""MCP servers' tools in the agent: listed with their schemas, called from the sync loop, errors and timeouts
returned to the model; in-process and over stdio (a real subprocess)."""

import logging
import sys

import pytest

from dsv4.agent import Agent, ToolRegistry
from dsv4.agent.mcp_bridge import McpTools, server_spec

from .conftest import ScriptedClient, call
from .mcp_server import SERVER


@pytest.fixture(autouse=True)
def quiet_mcp_server():
    # the SDK's server logs each failing tool with a rich traceback; the failures here are on purpose
    logging.getLogger("mcp").setLevel(logging.CRITICAL)


def run_calls(tools, calls):
    client = ScriptedClient([("", None, calls), ("done", None, [])])
    return Agent(client, ToolRegistry(tools)).run("compute"), client


@pytest.mark.parametrize("where", ["in-process", "stdio"])
def test_mcp_tools_are_called_from_the_loop(where):
    spec = SERVER if where == "in-process" else f"{sys.executable} -m tests.agent.mcp_server"
    with McpTools({"calc": spec}, timeout_s=5) as mcp:
        tools = mcp.tools()
        assert [t.name for t in tools] == ["add", "divide", "nap"]
        assert tools[0].parameters["required"] == ["a", "b"] and tools[0].description == "Add two integers."
        t, client = run_calls(tools, [call("c1", "add", a=2, b=40), call("c2", "divide", a=1, b=0),
                                      call("c3", "add", a="two", b=1)])
    assert t.status == "finished"
    ok, failed, invalid = t.steps[0].tool_results
    assert ok.ok and ok.output == "42"
    assert not failed.ok and failed.output.startswith("error from calc/divide:")
    assert not invalid.ok and "invalid arguments for add" in invalid.output  # checked before the call
    assert [tool["function"]["name"] for tool in client.requests[0][1]] == ["add", "divide", "nap"]


def test_a_slow_tool_times_out_and_the_run_goes_on():
    with McpTools({"calc": SERVER}, timeout_s=0.5, namespace=True) as mcp:
        assert [t.name for t in mcp.tools()] == ["calc__add", "calc__divide", "calc__nap"]
        t, _ = run_calls(mcp.tools(), [call("c1", "calc__nap", seconds=3), call("c2", "calc__add", a=1, b=1)])
    slow, after = t.steps[0].tool_results
    assert not slow.ok and "did not answer within 0.5 s" in slow.output
    assert after.ok and after.output == "2"


def test_server_specs_and_a_server_that_cannot_start():
    assert server_spec("https://x/mcp") == "https://x/mcp"
    assert server_spec("npx -y srv --flag").args == ["-y", "srv", "--flag"]
    with pytest.raises(ConnectionError, match="MCP server 'gone'.*its stderr ends: .*no such module here"):
        with McpTools({"gone": f"{sys.executable} -c \"import sys; sys.exit('no such module here')\""},
                      connect_timeout_s=20):
            pass
