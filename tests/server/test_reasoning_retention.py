"""Reasoning retention: a client that drops `reasoning_content` (or Anthropic `thinking` blocks) from a tool-call
turn the server produced gets the prompt a careful client gets, byte for byte, and `x-dsv4-reasoning-restored`;
`retain_reasoning=False` turns it off; on the engine, the next turn starts from the prefix cache past the reply."""

import asyncio

import pytest

from dsv4.encoding import encode_request
from dsv4.engine import Engine, EngineConfig, RequestDelta, SamplingParams
from dsv4.engine.detokenizer import Detokenizer, decode_ids
from dsv4.server import EngineBackend
from dsv4.server.reasoning_store import ReasoningStore
from tests.encoding.test_parse_strategies import render_calls

from .conftest import EOS_ID, ScriptedBackend, client_for, sse_events

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "days": {"type": "integer"}},
                                               "required": ["city"]}}}]
USER = [{"role": "system", "content": "You are a weather assistant. " * 20},
        {"role": "user", "content": "Weather in Paris and Rome?"}]
REASONING = "Two cities, so two calls; the user wants today's weather, so days is 1. " * 8
TURN1 = REASONING + "</think>Checking both." + render_calls([("get_weather", {"city": "Paris", "days": 1}),
                                                              ("get_weather", {"city": "Rome"})])


def second_turn(reply: dict, keep_reasoning: bool) -> list[dict]:
    """The conversation after the first reply and its tool results, as a careful or a stripping client sends it."""
    assistant = {"role": "assistant", "content": reply["content"], "tool_calls": reply["tool_calls"]}
    if keep_reasoning:
        assistant["reasoning_content"] = reply["reasoning_content"]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": f"{i + 15}C"}
               for i, c in enumerate(reply["tool_calls"])]
    return [*USER, assistant, *results]


async def conversation(http, *, stream_first: bool = False) -> list:
    """Turn 1, then turn 2 from a careful client and from one that strips reasoning; the responses."""
    body = {"messages": USER, "tools": TOOLS, "max_tokens": 400}
    first = await http.post("/v1/chat/completions", json={**body, "stream": stream_first})
    reply = first.json()["choices"][0]["message"] if not stream_first else _fold(sse_events(first.text))
    out = []
    for keep in (True, False):
        out.append(await http.post("/v1/chat/completions",
                                   json={**body, "messages": second_turn(reply, keep), "max_tokens": 4}))
    return [reply, *out]


def _fold(events) -> dict:
    reply = {"content": "", "reasoning_content": "", "tool_calls": []}
    for e in events:
        for choice in e["choices"] if e != "[DONE]" else ():
            d = choice["delta"]
            reply["content"] += d.get("content") or ""
            reply["reasoning_content"] += d.get("reasoning_content") or ""
            for tc in d.get("tool_calls") or ():
                if "id" in tc:
                    reply["tool_calls"].append({"id": tc["id"], "type": "function", "function": dict(tc["function"])})
                else:
                    reply["tool_calls"][tc["index"]]["function"]["arguments"] += tc["function"]["arguments"]
    return reply


@pytest.mark.parametrize("stream_first", [False, True])
def test_a_stripping_client_gets_the_careful_clients_prompt(real_tokenizer, stream_first):
    backend = ScriptedBackend(real_tokenizer, [TURN1, "ok", "ok"])

    async def main():
        async with client_for(backend) as http:
            return await conversation(http, stream_first=stream_first)

    reply, careful, stripping = asyncio.run(main())
    assert len(reply["tool_calls"]) == 2 and reply["reasoning_content"] == REASONING
    (_, _), (careful_ids, _), (stripped_ids, _) = backend.calls
    assert stripped_ids == careful_ids  # the same prompt, token for token
    rendered = encode_request({"messages": second_turn(reply, True), "tools": TOOLS})
    assert decode_ids(real_tokenizer, stripped_ids) == rendered and REASONING in rendered
    assert stripping.headers["x-dsv4-reasoning-restored"] == "1"
    assert "x-dsv4-reasoning-restored" not in careful.headers


def test_off_the_prompt_differs(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, [TURN1, "ok", "ok"])

    async def main():
        async with client_for(backend, retain_reasoning=False) as http:
            return await conversation(http)

    _, _, stripping = asyncio.run(main())
    (_, _), (careful_ids, _), (stripped_ids, _) = backend.calls
    assert stripped_ids != careful_ids and REASONING not in decode_ids(real_tokenizer, stripped_ids)
    assert "x-dsv4-reasoning-restored" not in stripping.headers


def test_an_sqlite_store_restores_after_a_restart(real_tokenizer, tmp_path):
    path = tmp_path / "reasoning.sqlite"

    async def main():
        async with client_for(ScriptedBackend(real_tokenizer, TURN1), reasoning_store=ReasoningStore(path)) as http:
            r = await http.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS})
        reply = r.json()["choices"][0]["message"]
        backend = ScriptedBackend(real_tokenizer, "ok")
        async with client_for(backend, reasoning_store=ReasoningStore(path)) as http:  # a new server
            r = await http.post("/v1/chat/completions", json={"messages": second_turn(reply, False), "tools": TOOLS})
        return r, backend, reply

    r, backend, reply = asyncio.run(main())
    assert r.headers["x-dsv4-reasoning-restored"] == "1"
    assert backend.calls[0][0] == real_tokenizer.encode(
        encode_request({"messages": second_turn(reply, True), "tools": TOOLS}), add_special_tokens=False).ids


def test_anthropic_thinking_blocks_dropped_are_restored(real_tokenizer):
    tools = [{"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]}]
    backend = ScriptedBackend(real_tokenizer, [TURN1, "ok", "ok"])

    async def main():
        body = {"model": "dsv4-test", "max_tokens": 400, "system": USER[0]["content"], "tools": tools}
        async with client_for(backend) as http:
            first = (await http.post("/v1/messages", json={**body, "messages": USER[1:]})).json()
            out = []
            for keep in (True, False):
                blocks = [b for b in first["content"] if keep or b["type"] != "thinking"]
                results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "15C"}
                           for b in first["content"] if b["type"] == "tool_use"]
                messages = [*USER[1:], {"role": "assistant", "content": blocks}, {"role": "user", "content": results}]
                out.append(await http.post("/v1/messages", json={**body, "messages": messages}))
            return first, out

    first, (careful, stripping) = asyncio.run(main())
    assert [b["type"] for b in first["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert backend.calls[1][0] == backend.calls[2][0]
    assert stripping.headers["x-dsv4-reasoning-restored"] == "1" and "x-dsv4-reasoning-restored" not in careful.headers


class ReplayBackend(EngineBackend):
    """The engine, with its first reply scripted: the prompt and `script` are run through the engine (so its cache
    holds them, as if it had generated the script; the tiny model's random weights would not call a tool), then
    the script streams as the reply. Later requests generate. Records each request's prompt ids."""

    def __init__(self, engine: Engine, script: str):
        super().__init__(engine, "tiny")
        self.script, self.calls = script, []

    def stream(self, prompt_ids, params: SamplingParams):
        self.calls.append(list(prompt_ids))
        return super().stream(prompt_ids, params) if len(self.calls) > 1 else self._replay(prompt_ids)

    async def _replay(self, prompt_ids):
        script = self.engine.encode(self.script)
        await self.async_engine.generate(prompt_ids + script, SamplingParams(temperature=0, max_tokens=1))
        detok = Detokenizer(self.engine.tokenizer)
        for token in script:
            detok.add(token)
            yield RequestDelta(0, [token], detok.take())
        detok.end(script)
        yield RequestDelta(0, [EOS_ID], detok.take(), None, "stop")


@pytest.mark.parametrize("retain", [True, False])
def test_the_next_turn_hits_the_prefix_cache_past_the_reply(tiny_model, tokenizer, retain):
    # 128-token prefill chunks: every block of the prompt and the replayed reply is published, as decoding would
    engine = Engine(tiny_model, tokenizer, EngineConfig(num_blocks=24, prefix_cache_size=8,
                                                        max_num_batched_tokens=128))
    backend = ReplayBackend(engine, TURN1)

    async def main():
        async with client_for(backend, retain_reasoning=retain) as http:
            body = {"messages": USER, "tools": TOOLS, "max_tokens": 400}
            reply = (await http.post("/v1/chat/completions", json=body)).json()["choices"][0]["message"]
            before = engine.stats().prefix_hit_tokens
            r = await http.post("/v1/chat/completions", json={**body, "messages": second_turn(reply, False),
                                                              "max_tokens": 2, "temperature": 0})
            assert r.status_code == 200
            return reply, engine.stats().prefix_hit_tokens - before

    reply, hit = asyncio.run(main())
    first_prompt, first_reply = len(backend.calls[0]), len(engine.encode(TURN1))
    careful = engine.encode(encode_request({"messages": second_turn(reply, True), "tools": TOOLS}))
    if retain:
        assert backend.calls[1] == careful
        assert hit >= (first_prompt + first_reply) // 128 * 128 > first_prompt  # into the reply's blocks
    else:
        assert backend.calls[1] != careful and hit <= first_prompt // 128 * 128  # only up to the first prompt
    print(f"retain={retain}: first prompt {first_prompt} tokens + reply {first_reply}; next turn "
          f"{len(backend.calls[1])} tokens, {hit} from the prefix cache")


def test_an_answer_turns_reasoning_comes_back_for_the_same_conversation(real_tokenizer):
    """With tools declared V4 renders every earlier turn's reasoning, answers included: an answer is keyed by the
    conversation before it, so a stripping client's next user turn renders as a careful client's; a conversation
    changed before the answer does not get it."""
    backend = ScriptedBackend(real_tokenizer, [TURN1, "Both are mild.</think>Paris 15C, Rome 16C.", "a", "b", "c"])

    async def main():
        body = {"tools": TOOLS, "max_tokens": 400}
        async with client_for(backend) as http:
            first = (await http.post("/v1/chat/completions", json={**body, "messages": USER})).json()
            history = second_turn(first["choices"][0]["message"], False)
            answer = (await http.post("/v1/chat/completions", json={**body, "messages": history})).json()
            reply = answer["choices"][0]["message"]
            out = []
            for keep, edit in ((True, ""), (False, ""), (False, " (edited)")):
                turn = {"role": "assistant", "content": reply["content"],
                        **({"reasoning_content": reply["reasoning_content"]} if keep else {})}
                earlier = [{**history[0], "content": history[0]["content"] + edit}, *history[1:]]
                messages = [*earlier, turn, {"role": "user", "content": "And Oslo?"}]
                out.append(await http.post("/v1/chat/completions", json={**body, "messages": messages}))
            return out

    careful, stripping, edited = asyncio.run(main())
    careful_ids, stripped_ids, edited_ids = (ids for ids, _ in backend.calls[2:])
    assert stripped_ids == careful_ids and "Both are mild." in decode_ids(real_tokenizer, stripped_ids)
    assert stripping.headers["x-dsv4-reasoning-restored"] == "2"  # the tool-call turn and the answer
    assert edited.headers["x-dsv4-reasoning-restored"] == "1"  # the tool-call turn only (found by its ids)
    assert "Both are mild." not in decode_ids(real_tokenizer, edited_ids)
