"""Tool-call salvage: the texts reported for V4 become calls of declared tools with valid arguments; look-alikes in
prose and Markdown code, undeclared tools and invalid arguments do not."""

import json

import pytest

from dsv4.encoding import parse_completion
from dsv4.encoding.salvage import salvage_tool_calls


def tool(name: str, properties: dict, required=()) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": properties, "required": list(required)}}}


TOOLS = [
    tool("wechat_get_chat_history", {"chat_name": {"type": "string"}, "limit": {"type": "integer"}}, ["chat_name"]),
    tool("session_status", {"sessionKey": {"type": "string"}}, ["sessionKey"]),
    tool("batch_web_search", {"queries": {"type": "array", "items": {"type": "string"}}}, ["queries"]),
    tool("exec_command", {"cmd": {"type": "string"}}, ["cmd"]),
]

# felinics/Memoh#435 (DeepSeek V4 Pro), verbatim
MEMOH = '<tool_call id="call_00_xxx" name="wechat_get_chat_history">\n' \
        '{"chat_name":"Aide & GPT-Runner 交流群","limit":80}\n</tool_call>'
# openclaw/openclaw#85918 (deepseek-v4-pro on Foundry), verbatim
OPENCLAW = '<|DSML|tool_calls>\n<|DSML|invoke name="session_status">\n' \
           '<|DSML|parameter name="sessionKey" string="true">current</|DSML|parameter>\n' \
           '</|DSML|invoke>\n</|DSML|tool_calls>'
# lsdefine/GenericAgent#804: the double-bar and double-vertical-line spellings it lists
DOUBLE_BAR = OPENCLAW.replace("|DSML|", "｜｜DSML｜｜")
DOUBLE_LINE = OPENCLAW.replace("|DSML|", "‖DSML‖")
# AgentFlocks/flocks#687: a spaced spelling with a tool_use wrapper
SPACED = OPENCLAW.replace("|DSML|", " | DSML | ").replace("tool_calls", "tool_use")
# deepseek-ai/DeepSeek-V3#1244: "writes the function name + JSON arguments verbatim into the content"
BARE = 'I will search for both.\n\nbatch_web_search({"queries": ["DeepSeek V4 release", "MoE routing"]})'


@pytest.mark.parametrize("text, name, args, shape", [
    (MEMOH, "wechat_get_chat_history", {"chat_name": "Aide & GPT-Runner 交流群", "limit": 80}, "tool_call_tag"),
    (OPENCLAW, "session_status", {"sessionKey": "current"}, "dsml"),
    (DOUBLE_BAR, "session_status", {"sessionKey": "current"}, "dsml"),
    (DOUBLE_LINE, "session_status", {"sessionKey": "current"}, "dsml"),
    (SPACED, "session_status", {"sessionKey": "current"}, "dsml"),
    (BARE, "batch_web_search", {"queries": ["DeepSeek V4 release", "MoE routing"]}, "bare_call"),
    ('<｜DSML｜invoke name="exec_command">\n<｜DSML｜parameter name="cmd" string="true">ls -la</｜DSML｜parameter>\n'
     '</｜DSML｜invoke>', "exec_command", {"cmd": "ls -la"}, "dsml"),  # an invoke without its block
    ('<tool_call>\n{"name": "exec_command", "arguments": {"cmd": "pwd"}}\n</tool_call>', "exec_command",
     {"cmd": "pwd"}, "tool_call_tag"),  # the Hermes form
])
def test_reported_shapes_become_calls(text, name, args, shape):
    content = f"Let me look that up.\n{text}\n"
    found = salvage_tool_calls(content, TOOLS)
    assert [(c.call.name, json.loads(c.call.arguments), c.shape) for c in found.calls] == [(name, args, shape)]
    c = found.calls[0]
    assert content[c.offset:c.offset + len(c.text)] == c.text and c.call.id.startswith("call_")
    warning = found.warnings()[0]
    assert warning["type"] == "tool_call_salvaged" and warning["text"] == c.text and warning["tool"] == name


def test_string_false_values_follow_the_schema():
    text = OPENCLAW.replace("session_status", "wechat_get_chat_history").replace(
        '<|DSML|parameter name="sessionKey" string="true">current</|DSML|parameter>',
        '<|DSML|parameter name="chat_name" string="true">team</|DSML|parameter>\n'
        '<|DSML|parameter name="limit" string="false">80</|DSML|parameter>')
    [c] = salvage_tool_calls(text, TOOLS).calls
    assert json.loads(c.call.arguments) == {"chat_name": "team", "limit": 80}


def test_several_calls_in_one_block():
    text = ('<|DSML|tool_calls>\n'
            '<|DSML|invoke name="exec_command">\n<|DSML|parameter name="cmd" string="true">a</|DSML|parameter>\n'
            '</|DSML|invoke>\n'
            '<|DSML|invoke name="exec_command">\n<|DSML|parameter name="cmd" string="true">b</|DSML|parameter>\n'
            '</|DSML|invoke>\n</|DSML|tool_calls>')
    calls = salvage_tool_calls(text, TOOLS).calls
    assert [json.loads(c.call.arguments)["cmd"] for c in calls] == ["a", "b"]
    assert calls[0].call.id != calls[1].call.id


@pytest.mark.parametrize("content", [
    f"Here is what a call looks like:\n```\n{MEMOH}\n```\nDo not send it.",  # fenced code
    f"~~~xml\n{OPENCLAW}\n~~~",
    f"```python\n{BARE.splitlines()[-1]}\n```",
    f"Inline: `{BARE.splitlines()[-1]}` is the syntax.",  # inline code
    'You could call batch_web_search({"queries": ["x"]}) yourself.',  # inside a sentence
    f"The tag {MEMOH.replace(chr(10), ' ')} is what the model writes.",
    'unknown_tool({"queries": ["x"]})',  # not declared
    MEMOH.replace("wechat_get_chat_history", "delete_everything"),
    'print({"queries": ["x"]})',
    "batch_web_search is a tool; call it with queries.",
])
def test_look_alikes_are_not_salvaged(content):
    found = salvage_tool_calls(content, TOOLS)
    assert found.calls == [] and found.refused == []


def test_invalid_arguments_are_refused_with_the_reason():
    found = salvage_tool_calls('batch_web_search({"queries": "not a list"})', TOOLS)
    assert found.calls == []
    [r] = found.refused
    assert "arguments.queries" in r.reason and r.warning()["type"] == "tool_call_not_salvaged"


def test_one_bad_call_means_none_are_taken():
    content = 'exec_command({"cmd": "ls"})\nbatch_web_search({"queries": 3})'
    found = salvage_tool_calls(content, TOOLS)
    assert found.calls == [] and len(found.refused) == 1


def test_no_tools_means_no_salvage():
    assert salvage_tool_calls(MEMOH, []).calls == [] and salvage_tool_calls(MEMOH, None).calls == []


def test_what_the_parser_leaves_in_content_is_salvaged():
    """The tolerant parser reads the fullwidth and ASCII spellings itself; the doubled bars reach the content."""
    message = parse_completion(f"Checking.\n{DOUBLE_BAR}", thinking_mode="chat", strict=False, tools=TOOLS)
    assert message.tool_calls == [] and DOUBLE_BAR in message.content
    [c] = salvage_tool_calls(message.content, TOOLS).calls
    assert c.call.name == "session_status"
