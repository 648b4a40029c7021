"""Enforced structured output and forced tool calls on the engine-backed server (random-weight tiny model), read
by the unmodified `openai` and `anthropic` clients: `tool_choice` required / named and Anthropic's `any` / `tool`
return a valid call of the right tool in thinking and non-think modes; strict tools under tool_choice "auto" get
the strict-tools grammar; `response_format` json_schema replies parse
(`chat.completions.parse`, LangChain's `with_structured_output` by json_schema and by function calling) and
validate; an unenforceable schema is a 400 naming the field."""

import asyncio

import anthropic
import httpx2
import jsonschema
import langchain_openai
import openai
import pydantic
import pytest

from dsv4.encoding.tokens import TOOL_CALLS_OPEN
from dsv4.engine import Engine, EngineConfig
from dsv4.server import EngineBackend, create_app
from dsv4.server.constrained import reply_grammar
from dsv4.server.protocol import ChatCompletionRequest

from .conftest import client_for

WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 14}},
           "required": ["city", "days"]}
SEARCH = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "search", "description": "Search.", "parameters": SEARCH}}]
SCHEMAS = {"get_weather": WEATHER, "search": SEARCH}
USER = [{"role": "user", "content": "Weather in Paris?"}]
NO_THINKING = {"thinking": {"type": "disabled"}}


@pytest.fixture(scope="module")
def backend(tiny_model, tokenizer):
    return EngineBackend(Engine(tiny_model, tokenizer, EngineConfig(num_blocks=64)), "tiny")


def openai_client(backend) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://dsv4/v1", api_key="none", http_client=client_for(backend),
                              max_retries=0)


def anthropic_client(backend) -> anthropic.AsyncAnthropic:
    transport = httpx2.ASGITransport(app=create_app(backend))
    return anthropic.AsyncAnthropic(base_url="http://dsv4", api_key="none", max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=transport, base_url="http://dsv4"))


@pytest.mark.parametrize("thinking", [True, False], ids=["thinking", "non-think"])
def test_openai_tool_choice_required_and_named_return_a_valid_call_of_the_right_tool(backend, thinking):
    extra = {} if thinking else NO_THINKING

    async def main():
        client = openai_client(backend)
        choices = ["required", {"type": "function", "function": {"name": "search"}}]
        return await asyncio.gather(*(client.chat.completions.create(
            model="tiny", messages=USER, tools=TOOLS, tool_choice=c, max_tokens=200 if thinking else 90, seed=i,
            extra_body=extra)
            for i, c in enumerate(choices)))

    for i, reply in enumerate(asyncio.run(main())):
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.function.name in SCHEMAS and (i == 0 or call.function.name == "search")
            jsonschema.validate(pydantic.TypeAdapter(dict).validate_json(call.function.arguments),
                                SCHEMAS[call.function.name])
        # thinking: the model reasoned first (random text here), and the engine closed the reasoning in time
        assert bool(choice.message.model_extra.get("reasoning_content")) == thinking


@pytest.mark.parametrize("thinking", [True, False], ids=["thinking", "non-think"])
def test_anthropic_tool_choice_any_and_tool_return_a_valid_tool_use(backend, thinking):
    tools = [{"name": t["function"]["name"], "description": t["function"]["description"],
              "input_schema": t["function"]["parameters"]} for t in TOOLS]
    extra = {} if thinking else {"thinking": {"type": "disabled"}}

    async def main():
        client = anthropic_client(backend)
        return await asyncio.gather(*(client.messages.create(
            model="tiny", max_tokens=90, messages=USER, tools=tools, tool_choice=c, **extra)
            for c in ({"type": "any"}, {"type": "tool", "name": "get_weather"})))

    for i, message in enumerate(asyncio.run(main())):
        uses = [b for b in message.content if b.type == "tool_use"]
        assert message.stop_reason == "tool_use" and uses
        assert not [b for b in message.content if b.type == "text"]
        for use in uses:
            assert use.name in SCHEMAS and (i == 0 or use.name == "get_weather")
            jsonschema.validate(use.input, SCHEMAS[use.name])


class Forecast(pydantic.BaseModel):
    city: str
    days: int
    rain: bool
    temps: list[float]


def test_openai_parse_returns_the_pydantic_object(backend):
    async def main():
        client = openai_client(backend)
        return await asyncio.gather(*(client.chat.completions.parse(
            model="tiny", messages=[{"role": "user", "content": "Forecast for Paris as JSON."}],
            response_format=Forecast, max_tokens=80, seed=s, extra_body=extra)
            for s, extra in ((0, {}), (1, NO_THINKING))))

    for reply in asyncio.run(main()):
        assert reply.choices[0].finish_reason == "stop"
        assert isinstance(reply.choices[0].message.parsed, Forecast)


def test_an_unenforceable_schema_is_a_400_naming_response_format(backend):
    async def main():
        return await openai_client(backend).chat.completions.create(
            model="tiny", messages=USER, max_tokens=8, response_format={
                "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}})

    with pytest.raises(openai.BadRequestError) as e:
        asyncio.run(main())
    assert e.value.body["param"] == "response_format" and "objekt" in e.value.body["message"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output_returns_the_pydantic_object(backend, method):
    chat = langchain_openai.ChatOpenAI(model="tiny", base_url="http://dsv4/v1", api_key="none", max_retries=0,
                                       max_tokens=160, temperature=1.0, seed=4, http_async_client=client_for(backend))
    structured = chat.with_structured_output(Forecast, method=method)
    forecast = asyncio.run(structured.ainvoke("Forecast for Paris."))  # thinking mode (the server's default)
    assert isinstance(forecast, Forecast)


def test_strict_tools_under_auto_are_enforced_and_others_left_free(backend):
    strict = [{"type": "function", "function": {**t["function"], "strict": True}} for t in TOOLS]

    def grammar(tools, choice="auto"):
        request = ChatCompletionRequest(model="tiny", messages=USER, tools=tools, tool_choice=choice)
        return reply_grammar(request, thinking=True, backend=backend, max_tokens=100)

    enforced = grammar(strict)
    assert enforced is not None and enforced.finish_from == TOOL_CALLS_OPEN  # free text is never cut by the engine
    assert "get_weather" in enforced.lark and "CONTENT" in enforced.lark
    assert grammar(TOOLS) is None and grammar(strict, "none") is None  # non-strict tools, or no call allowed
    assert grammar(strict, "required").finish_from == ""  # a forced call: finished within max_tokens throughout


def test_a_strict_tools_request_answers_through_the_server(backend):
    # random weights answer in text here (they open no block); the reply is whole and parses
    strict = [{"type": "function", "function": {**t["function"], "strict": True}} for t in TOOLS]

    async def main():
        return await openai_client(backend).chat.completions.create(
            model="tiny", messages=USER, tools=strict, max_tokens=40, seed=3, extra_body=NO_THINKING)

    choice = asyncio.run(main()).choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    for call in choice.message.tool_calls or []:
        jsonschema.validate(pydantic.TypeAdapter(dict).validate_json(call.function.arguments),
                            SCHEMAS[call.function.name])
