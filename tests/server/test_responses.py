"""OpenAI's Responses API, read by the official `openai` client as the oracle of the wire format: output items as
the model wrote them (reasoning, message, function_call), the streamed events folding to the same response, a
function-call round trip continued by previous_response_id and sent whole (stateless) rendering the same prompt as
the chat-completions equivalent, the bounded store, errors in the Responses shape naming the field; then against a
real `dsv4 serve` on the tiny checkpoint, and the OpenAI Agents SDK's default model (OpenAIResponsesModel)."""

import asyncio
import json
from typing import Literal

import openai
import pytest

from dsv4.cli import build_parser
from dsv4.cli.serve_cmds import build_app
from dsv4.encoding import encode_request
from dsv4.server.background import serving
from dsv4.server.response_store import ResponseStore
from tests.encoding.test_parse_strategies import render_calls

from .conftest import ScriptedBackend, client_for

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
CHAT_TOOLS = [{"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}]
CALL = "Paris needs a call.</think>Let me check." + render_calls([("get_weather", {"city": "Paris"})])
ANSWER = "The tool said sunny.</think>It is sunny in Paris."


def run(coro):
    return asyncio.run(coro)


def client(backend) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://dsv4/v1", api_key="none", http_client=client_for(backend),
                              max_retries=0)


def items(response) -> list[tuple]:
    out = []
    for item in response.output:
        if item.type == "reasoning":
            out.append(("reasoning", "".join(c.text for c in item.content or [])))
        elif item.type == "message":
            out.append(("message", "".join(c.text for c in item.content)))
        else:
            out.append(("function_call", item.name, json.loads(item.arguments)))
    return out


def test_plain_reply_whole_and_streamed(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, [CALL, CALL])

    async def main():
        c = client(backend)
        whole = await c.responses.create(model=backend.model_name, input="Weather in Paris?", tools=TOOLS)
        kinds = []
        async with c.responses.stream(model=backend.model_name, input="Weather in Paris?", tools=TOOLS) as s:
            async for event in s:
                kinds.append((event.type, event.sequence_number))
            streamed = await s.get_final_response()
        return whole, kinds, streamed

    whole, kinds, streamed = run(main())
    want = [("reasoning", "Paris needs a call."), ("message", "Let me check."),
            ("function_call", "get_weather", {"city": "Paris"})]
    assert items(whole) == items(streamed) == want
    assert whole.status == streamed.status == "completed" and whole.output_text == "Let me check."
    call = whole.output[2]
    assert call.call_id and call.status == "completed" and whole.output[1].status == "completed"
    assert whole.usage.input_tokens == len(backend.calls[0][0])
    assert whole.usage.output_tokens == len(backend.encode(CALL)) + 1
    assert 0 < whole.usage.output_tokens_details.reasoning_tokens < whole.usage.output_tokens
    assert [n for _, n in kinds] == list(range(len(kinds)))  # sequence numbers in order, from 0
    names = [k for k, _ in kinds]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    for part in ("response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
                 "response.output_text.delta", "response.output_text.done", "response.function_call_arguments.delta",
                 "response.function_call_arguments.done", "response.output_item.done"):
        assert part in names
    assert names.count("response.output_item.added") == names.count("response.output_item.done") == 3


def test_a_function_call_round_trip_by_previous_response_id_and_stateless(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, [CALL, ANSWER, ANSWER])

    async def main():
        c = client(backend)
        first = await c.responses.create(model=backend.model_name, input="Weather in Paris?", tools=TOOLS,
                                         instructions="Be brief.")
        call = next(item for item in first.output if item.type == "function_call")
        result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
        continued = await c.responses.create(model=backend.model_name, previous_response_id=first.id, tools=TOOLS,
                                             input=[result], instructions="Be brief.")
        whole = [{"role": "user", "content": "Weather in Paris?"}, *[i.model_dump() for i in first.output], result]
        stateless = await c.responses.create(model=backend.model_name, input=whole, tools=TOOLS, store=False,
                                             instructions="Be brief.")
        return first, call, continued, stateless

    first, call, continued, stateless = run(main())
    assert items(continued) == items(stateless) == [("reasoning", "The tool said sunny."),
                                                    ("message", "It is sunny in Paris.")]
    assert continued.previous_response_id == first.id
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "content": "Let me check.", "reasoning_content": "Paris needs a call.",
                          "tool_calls": [{"id": call.call_id, "type": "function", "function": {
                              "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                         {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}], "tools": CHAT_TOOLS}
    want = backend.encode(encode_request(chat))
    assert backend.calls[1][0] == backend.calls[2][0] == want  # the same prompt as the chat-completions request


async def _post(backend, body, path="/v1/responses"):
    async with client_for(backend) as http:
        return await http.post(path, json=body)


@pytest.mark.parametrize("body, status, param, says", [
    ({"input": "hi", "previous_response_id": "resp_nope"}, 404, "previous_response_id", "resp_nope"),
    ({"input": [{"type": "web_search_call", "id": "x"}]}, 400, "input[0].type", "web_search_call"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400,
     "input[0].content[0].type", "input_image"),
    ({"input": [{"role": "user", "content": "go"}, {"type": "function_call_output", "call_id": "c9", "output": "x"}]},
     400, "input[1].call_id", "does not follow"),
    ({"input": [{"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{oops"},
                {"type": "function_call_output", "call_id": "c1", "output": "x"}], "tools": TOOLS},
     400, "input[1].arguments", "not valid JSON"),
    ({"input": [{"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c2", "output": "x"}], "tools": TOOLS},
     400, "input[2].call_id", "'c2'"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, 400, "tools[0].type", "function tools"),
    ({"input": "hi", "reasoning": {"effort": "extreme"}}, 400, None, "extreme"),
    ({"input": "hi", "temperature": 5}, 400, "temperature", "temperature"),
    ({"input": "hi", "max_output_tokens": 5000}, 400, "input", "maximum context length"),
    ({"input": "hi", "model": "gpt-5"}, 404, "model", "gpt-5"),
])
def test_errors_in_the_responses_shape_name_the_field(real_tokenizer, body, status, param, says):
    backend = ScriptedBackend(real_tokenizer, "x")
    r = run(_post(backend, body))
    error = r.json()["error"]
    assert r.status_code == status and error["param"] == param and says in error["message"], r.text
    assert error["type"] == "invalid_request_error" and not backend.calls


def test_store_false_and_the_bounded_store(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, ["</think>a", "</think>b"])
    unstored = run(_post(backend, {"input": "hi", "store": False})).json()
    r = run(_post(backend, {"input": "more", "previous_response_id": unstored["id"]}))
    assert r.status_code == 404 and r.json()["error"]["code"] == "previous_response_not_found"
    store = ResponseStore(max_responses=2, max_chars=100)
    for i in range(3):
        store.put(f"r{i}", [{"role": "user", "content": str(i)}])
    assert store.get("r0") is None and store.get("r2") == [{"role": "user", "content": "2"}] and len(store) == 2
    store.put("big", [{"role": "user", "content": "x" * 60}])
    store.put("bigger", [{"role": "user", "content": "y" * 60}])  # over the character budget: the oldest go
    assert store.get("big") is None and store.get("bigger") is not None
    store.put("huge", [{"role": "user", "content": "z" * 200}])  # over the budget alone: not kept
    assert store.get("huge") is None and store.get("bigger") is not None


def test_max_output_tokens_makes_it_incomplete(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, ANSWER)
    r = run(client(backend).responses.create(model=backend.model_name, input="hi", max_output_tokens=3,
                                             reasoning={"effort": "low", "summary": "auto"}))
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3 == r.usage.output_tokens_details.reasoning_tokens
    assert r.output[0].type == "reasoning" and r.output[0].status == "incomplete"
    assert r.output[0].summary[0].text == r.output[0].content[0].text  # V4's reasoning stands in for the summary
    assert backend.calls[0][1].max_tokens == 3


def test_effort_none_turns_thinking_off_and_developer_is_system(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, "Hello.")
    r = run(client(backend).responses.create(
        model=backend.model_name, reasoning={"effort": "none"},
        input=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [
            {"type": "input_text", "text": "hi"}]}]))
    assert items(r) == [("message", "Hello.")] and r.usage.output_tokens_details.reasoning_tokens == 0
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "reasoning_effort": "none"}
    assert backend.calls[0][0] == backend.encode(encode_request(chat))


def test_a_call_written_as_text_is_salvaged_when_the_server_says_so(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, '</think>Calling.\n<tool_call name="get_weather">{"city": "Rome"}'
                                              '</tool_call>')
    c = openai.AsyncOpenAI(base_url="http://dsv4/v1", api_key="none", max_retries=0,
                           http_client=client_for(backend, salvage_tool_calls=True))
    r = run(c.responses.create(model=backend.model_name, input="Weather in Rome?", tools=TOOLS))
    assert items(r)[-1] == ("function_call", "get_weather", {"city": "Rome"}) and r.output[0].type == "message"


def test_a_failing_generation(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, ANSWER, fail_after=3)
    r = run(_post(backend, {"input": "hi"}))
    assert r.status_code == 500 and "device lost" in r.json()["error"]["message"]
    r = run(_post(backend, {"input": "hi", "stream": True}))
    events = [json.loads(line[len("data: "):]) for line in r.text.splitlines() if line.startswith("data: ")]
    last = events[-1]
    assert last["type"] == "response.failed" and last["response"]["status"] == "failed"
    assert "device lost" in last["response"]["error"]["message"]
    before = real_tokenizer.decode(backend.encode(ANSWER)[:3])  # what came before the failure
    assert last["response"]["output"][0]["content"][0]["text"] == before
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    r = run(_post(backend, {"input": "more", "previous_response_id": last["response"]["id"]}))
    assert r.status_code == 404  # a failed response is not kept


def test_model_by_id(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer)
    model = run(client(backend).models.retrieve(backend.model_name))
    assert model.id == backend.model_name
    with pytest.raises(openai.NotFoundError):
        run(client(backend).models.retrieve("gpt-5"))


ENUM_TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def served(tiny_dir):
    """The app `dsv4 serve` builds on the tiny checkpoint (random weights; the engine in this process), over a
    socket as `dsv4 serve` runs it."""
    args = build_parser().parse_args(["serve", "--model", str(tiny_dir), "--served-model-name", "tiny",
                                      "--engine-in-process", "--max-num-seqs", "2", "--kv-cache-gib", "0.05"])
    with serving(build_app(args)) as url:
        yield url


def final(events: list) -> object:
    """The response a stream ends with (response.completed, or response.incomplete at max_output_tokens)."""
    return next(e.response for e in reversed(events) if e.type in ("response.completed", "response.incomplete"))


def test_the_openai_client_against_dsv4_serve(served):
    c = openai.OpenAI(base_url=f"{served}/v1", api_key="none", max_retries=0)
    plain = c.responses.create(model="tiny", input="Say hi.", max_output_tokens=12, temperature=0)
    assert plain.status in ("completed", "incomplete") and 0 < plain.usage.output_tokens <= 12
    assert plain.output and plain.usage.input_tokens > 0
    events = list(c.responses.create(model="tiny", input="Say hi.", max_output_tokens=12, temperature=0, stream=True))
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(numbers))) and items(final(events)) == items(plain)  # greedy: the same reply

    # a function call forced by tool_choice, its result sent back by previous_response_id and stateless
    first = c.responses.create(model="tiny", input="Weather in Paris?", tools=ENUM_TOOLS, tool_choice="required",
                               max_output_tokens=48, temperature=0)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("Paris", "Rome")
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    continued = c.responses.create(model="tiny", previous_response_id=first.id, input=[result], tools=ENUM_TOOLS,
                                   max_output_tokens=8, temperature=0)
    history = [{"role": "user", "content": "Weather in Paris?"}, *[i.model_dump() for i in first.output], result]
    stateless = c.responses.create(model="tiny", input=history, tools=ENUM_TOOLS, store=False, max_output_tokens=8,
                                   temperature=0)
    assert continued.usage.input_tokens == stateless.usage.input_tokens > first.usage.input_tokens
    assert items(continued) == items(stateless)


def test_the_agents_sdk_default_model_runs_a_turn(served):
    # random weights never end a reply on their own: the turn is a call forced by tool_choice (the SDK's refusal of
    # an incomplete response is right), whose result the agent returns as its output
    agents = pytest.importorskip("agents")  # the OpenAI Agents SDK (test extra)
    calls = []

    @agents.function_tool
    def get_weather(city: Literal["Paris", "Rome"]) -> str:
        """Weather of a city."""
        calls.append(city)
        return f"sunny in {city}"

    c = openai.AsyncOpenAI(base_url=f"{served}/v1", api_key="none", max_retries=0)
    agent = agents.Agent(name="assistant", instructions="Be brief.", tools=[get_weather],
                         model=agents.OpenAIResponsesModel(model="tiny", openai_client=c),
                         model_settings=agents.ModelSettings(max_tokens=48, temperature=0, tool_choice="required"),
                         tool_use_behavior="stop_on_first_tool")
    result = run(agents.Runner.run(agent, "Weather in Paris?", run_config=agents.RunConfig(tracing_disabled=True)))
    assert len(calls) == 1 and result.final_output == f"sunny in {calls[0]}"
    response = result.raw_responses[-1]
    assert response.usage.output_tokens > 0 and response.output[-1].type == "function_call"
