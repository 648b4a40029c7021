"""`POST /v1/completions` (raw prompts, no chat template), read by the official `openai` client: text and token-id
prompts, OpenAI's default of 16 tokens, streaming equal to the whole reply, legacy logprobs, echo, refusals."""

import asyncio

import openai
import pytest

from .conftest import ScriptedBackend, client_for, sse_events

SCRIPT = "Once upon a time, a cache held every token it was given, and nothing was ever recomputed. The end."


def client(backend) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://dsv4/v1", api_key="none", http_client=client_for(backend),
                              max_retries=0)


def complete(backend, **body):
    return asyncio.run(client(backend).completions.create(model=backend.model_name, **body))


def test_text_and_token_prompts(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, SCRIPT)
    r = complete(backend, prompt="Tell me a story.", max_tokens=200)
    assert r.object == "text_completion" and r.choices[0].text == SCRIPT and r.choices[0].finish_reason == "stop"
    ids = backend.encode("Tell me a story.")
    assert backend.calls[0][0] == ids
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), len(backend.encode(SCRIPT)) + 1)
    complete(backend, prompt=[0, 5, 6, 7], max_tokens=200)
    assert backend.calls[1][0] == [0, 5, 6, 7]


def test_sixteen_tokens_by_default(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, SCRIPT)
    r = complete(backend, prompt="x")
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 16
    assert r.choices[0].text == real_tokenizer.decode(backend.encode(SCRIPT)[:16])


def test_streamed_text_and_logprobs_equal_the_whole_reply(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, SCRIPT)
    whole = complete(backend, prompt="x", max_tokens=200, logprobs=2)
    lp = whole.choices[0].logprobs
    assert "".join(lp.tokens[:-1]) == SCRIPT and lp.token_logprobs[0] == -0.25
    assert all(len(top) == 2 for top in lp.top_logprobs)
    assert lp.text_offset[:3] == [0, len(lp.tokens[0]), len(lp.tokens[0]) + len(lp.tokens[1])]

    async def streamed():
        async with client_for(backend) as http:
            r = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 200, "logprobs": 2,
                                                         "stream": True, "stream_options": {"include_usage": True}})
            return sse_events(r.text)

    events = asyncio.run(streamed())
    chunks = [e["choices"][0] for e in events[:-2]]
    assert "".join(c["text"] for c in chunks) == SCRIPT and chunks[-1]["finish_reason"] == "stop"
    assert [t for c in chunks for t in c["logprobs"]["tokens"]] == lp.tokens
    assert [o for c in chunks for o in c["logprobs"]["text_offset"]] == lp.text_offset
    assert events[-2]["usage"]["completion_tokens"] == whole.usage.completion_tokens
    assert events[-1] == "[DONE]"


def test_echo(real_tokenizer):
    r = complete(ScriptedBackend(real_tokenizer, "42."), prompt="The answer is ", echo=True)
    assert r.choices[0].text == "The answer is 42."
    ids = real_tokenizer.encode("Der Preis: 5 €, ", add_special_tokens=False).ids
    r = complete(ScriptedBackend(real_tokenizer, "ok"), prompt=ids, echo=True)
    assert r.choices[0].text == "Der Preis: 5 €, ok"


@pytest.mark.parametrize("body, says", [
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "echo": True, "logprobs": 1}, "echo with logprobs"),
    ({"prompt": "x", "best_of": 3}, "best_of=3"),
    ({"prompt": [5, 10**9]}, "out of range"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x", "max_tokens": 10**6}, "maximum context length"),
])
def test_refusals_name_the_problem(real_tokenizer, body, says):
    backend = ScriptedBackend(real_tokenizer, SCRIPT)

    async def post():
        async with client_for(backend) as http:
            return await http.post("/v1/completions", json=body)

    r = asyncio.run(post())
    assert r.status_code == 400 and says in r.json()["error"]["message"] and not backend.calls
