"""`OpenAIClient`: the request it sends, retries on transient failures only, errors that keep the endpoint's
message, and the agent end to end through `dsv4 serve`'s API (scripted completions, a real socket and sandbox)."""

import json

import httpx
import pytest

from dsv4.agent import Agent, ClientError, ContextExhausted, Message, OpenAIClient, ToolRegistry, sandbox_tools
from dsv4.server import create_app
from dsv4.server.background import serving
from tests.encoding.test_parse_strategies import render_calls
from tests.server.conftest import ScriptedBackend

OK = {"choices": [{"message": {"role": "assistant", "content": "hi", "reasoning_content": "r",
                               "tool_calls": None}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def client_with(answers: list, **kw) -> tuple[OpenAIClient, list[dict]]:
    """A client whose endpoint answers with `answers` in turn (a status and body, or an exception to raise)."""
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return httpx.Response(status, json=body) if not isinstance(body, str) else httpx.Response(status, text=body)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return OpenAIClient("http://v4/v1/", "deepseek-v4", extra={"thinking": {"type": "enabled"}}, backoff_s=0,
                        http=http, **kw), sent


def test_request_and_reply():
    client, sent = client_with([(200, OK)])
    messages = [Message(role="user", content="x"),
                Message(role="assistant", content="", reasoning_content="why",
                        tool_calls=[{"id": "c", "function": {"name": "f", "arguments": "{}"}}]),
                Message(role="tool", tool_call_id="c", content="out")]
    out = client.complete(messages, TOOLS)
    assert (out.message.content, out.message.reasoning_content, out.finish_reason) == ("hi", "r", "stop")
    assert out.usage["prompt_tokens"] == 5
    body = sent[0]
    assert body["model"] == "deepseek-v4" and body["tools"] == TOOLS and body["thinking"] == {"type": "enabled"}
    assert body["messages"][1] == {"role": "assistant", "content": "", "reasoning_content": "why",
                                   "tool_calls": [{"id": "c", "type": "function",
                                                   "function": {"name": "f", "arguments": "{}"}}]}
    assert body["messages"][2] == {"role": "tool", "content": "out", "tool_call_id": "c"}


def test_transient_failures_are_retried():
    client, sent = client_with([httpx.ConnectError("refused"), (503, {"error": {"message": "busy"}}),
                                (429, {"error": {"message": "slow down"}}), (200, OK)])
    assert client.complete([Message(role="user", content="x")], []).message.content == "hi"
    assert len(sent) == 4


@pytest.mark.parametrize("answers, error, says", [
    ([(401, {"error": {"message": "bad key", "code": "invalid_api_key"}})], ClientError, "HTTP 401: bad key"),
    ([(400, {"error": {"message": "this model's maximum context length is 4096 tokens",
                       "code": "context_length_exceeded"}})], ContextExhausted, "maximum context length"),
    ([(500, "boom")] * 3, ClientError, "HTTP 500: boom"),
    ([httpx.ReadTimeout("slow")] * 3, ClientError, "ReadTimeout"),
    ([(200, {"choices": []})], ClientError, "not a chat completion"),
])
def test_errors_keep_the_endpoints_message(answers, error, says):
    tries = len(answers)  # 3 for transient failures (retries=2), 1 for a refusal: 4xx answers are not retried
    client, sent = client_with(answers, retries=2)
    with pytest.raises(error, match=says):
        client.complete([Message(role="user", content="x")], [])
    assert len(sent) == tries


def test_agent_through_the_dsv4_server(real_tokenizer, make_sandbox):
    # the model's turns as V4 text: the server parses the DSML call, the agent runs it in the sandbox, the next
    # prompt the server renders carries the tool result and the first turn's reasoning
    scripts = ["I should look.</think>" + render_calls([("bash", {"command": "echo $((6 * 7))"})]),
               "The shell said 42.</think>It is 42."]
    backend = ScriptedBackend(real_tokenizer, scripts)
    sb = make_sandbox("process")
    with serving(create_app(backend)) as url:
        agent = Agent(OpenAIClient(f"{url}/v1", backend.model_name, extra={"temperature": 0}),
                      ToolRegistry(sandbox_tools(sb)))
        t = agent.run("What is 6 * 7? Use the shell.")
    assert t.status == "finished" and t.answer == "It is 42."
    assert t.steps[0].tool_results[0].ok and "42" in t.steps[0].tool_results[0].output
    second_prompt = real_tokenizer.decode(backend.calls[1][0], skip_special_tokens=False)
    assert "<tool_result>exit code: 0\nstdout:\n42\n</tool_result>" in second_prompt
    assert "<think>I should look.</think>" in second_prompt  # reasoning kept across the tool turn
    assert backend.calls[1][1].temperature == 0
