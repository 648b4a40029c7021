import json
import random
from collections import Counter

import pytest

from dsv4.agent.sandbox_tools import sandbox_tools
from dsv4.agent.tools import ToolRegistry
from dsv4.encoding.grammar import strict_tools_grammar
from dsv4.encoding.tokens import DSML, EOS, THINK_END
from dsv4.engine.constraint import Constraint, GrammarTokenizer
from dsv4.engine.sampling_params import Grammar
from dsv4.sandbox import Sandbox
from dsv4.train.data import agent_sample
from dsv4.train.episodes import FAMILIES, TRAINING_WEIGHTS, episode_request, make_task, prepare
from dsv4.train.phrasing import CLOSERS, HELD_OUT_CLOSERS, HELD_OUT_OPENERS, OPENERS
from dsv4.train.sample import chat_sample
from dsv4.train.tokenizer import train_tokenizer
from dsv4.train.words import NOUNS, POOLED, Names, split


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox.create("process") as sb:
        yield sb


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_episode_tool_results_are_what_the_tools_return(sandbox, family):
    task = make_task(random.Random(3), family=family)
    prepare(sandbox, task)
    request = episode_request(task, sandbox)
    results = [m["content"] for m in request["messages"] if m["role"] == "tool"]
    prepare(sandbox, task)  # again, and call the tools as the agent would
    registry = ToolRegistry(sandbox_tools(sandbox))
    calls = [c["function"] for m in request["messages"] if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    assert results == [registry.call(c["name"], c["arguments"]).text for c in calls]
    assert task.expect_in_answer in request["messages"][-1]["content"]
    if task.expect_file:
        path, content = task.expect_file
        assert sandbox.read_file(path).decode() == content
    sample = chat_sample(request, family)
    assert len(sample.spans) == len(calls) + 1


def test_thinking_off_episode_has_no_reasoning(sandbox):
    task = make_task(random.Random(0), family="compute")
    prepare(sandbox, task)
    request = episode_request(task, sandbox, thinking=False)
    assert request["thinking"] == {"type": "disabled"}
    assert not any("reasoning_content" in m for m in request["messages"])
    assert "<think>" not in chat_sample(request, "compute").text.split("<｜Assistant｜>", 1)[1]


def test_held_out_tasks_use_unseen_names_and_phrasings():
    train_nouns, held_nouns = set(split(NOUNS, False)), set(split(NOUNS, True))
    assert not train_nouns & held_nouns
    rng = random.Random(0)
    train = [make_task(rng, False, "read_value").prompt for _ in range(200)]
    held = make_task(rng, True, "read_value")
    assert "I need the" in held.prompt and not any("I need the" in p for p in train)  # the held-out template
    assert any(p.startswith(o) for p in train for o in OPENERS[:-HELD_OUT_OPENERS])  # openers vary the training side
    assert not any(p.startswith(o) for p in train for o in OPENERS[-HELD_OUT_OPENERS:])
    assert not any(p.endswith(c) for p in train for c in CLOSERS[-HELD_OUT_CLOSERS:])
    path = next(iter(held.files))
    assert path.split("/")[1].removesuffix(".txt") in held_nouns


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_invented_names_solve_like_pool_names(sandbox, family):
    """With every name made up, the plan still runs (the tools show what it expects) and no name is a pool's."""
    rng = random.Random(11)
    for _ in range(8):
        task = make_task(rng, family=family, invented=1.0)
        prepare(sandbox, task)
        episode_request(task, sandbox)  # raises if a tool result misses what the plan expects (e.g. two grep hits)
        names = {part for path in task.files for part in path.replace(".", "/").split("/")[:-1]}
        assert not names & POOLED


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unfamiliar_words_leave_the_plan_solvable(sandbox, family):
    rng = random.Random(12)
    for _ in range(6):
        task = make_task(rng, family=family, invented=0.5, unfamiliar=1.0)
        prepare(sandbox, task)
        episode_request(task, sandbox)


def test_invented_fraction_mixes_pool_and_made_up_names():
    rng = random.Random(0)
    picked = [w for _ in range(200) for w in Names(invented=0.5).pick(rng, NOUNS, 3)]
    made_up = [w for w in picked if w not in POOLED]
    assert 0.4 < len(made_up) / len(picked) < 0.6
    assert set(picked) - set(made_up) <= set(split(NOUNS, False))
    assert all(w.isalpha() and w.islower() for w in made_up)
    assert all(len(set(Names(invented=1.0).pick(rng, NOUNS, 20))) == 20 for _ in range(50))  # distinct within a draw


def test_held_out_tasks_invent_nothing():
    for made_up in ({"invented": 0.5}, {"unfamiliar": 0.5}):
        with pytest.raises(ValueError, match="held-out tasks are named and phrased from the held-out pools only"):
            make_task(random.Random(0), held_out=True, **made_up)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown task family 'nope'"):
        make_task(random.Random(0), family="nope")


def test_arguments_are_json(sandbox):
    task = make_task(random.Random(1), family="write_file")
    prepare(sandbox, task)
    call = episode_request(task, sandbox)["messages"][2]["tool_calls"][0]["function"]
    assert json.loads(call["arguments"]) == task.calls[0].args


def test_training_draws_families_by_their_weights():
    assert set(TRAINING_WEIGHTS) == set(FAMILIES)
    rng = random.Random(5)
    drawn = Counter(make_task(rng).family for _ in range(1500))
    total = sum(TRAINING_WEIGHTS.values())
    for family, weight in TRAINING_WEIGHTS.items():
        assert abs(drawn[family] / 1500 - weight / total) < 0.04, (family, drawn)


def test_a_strict_form_episode_is_what_the_strict_tools_grammar_enforces(sandbox):
    # episodes whose tools are in strict form teach the calls the server's strict grammar lets through: every
    # parameter of the tool in its order, null for those the plan leaves out, and the same tool results
    for family in sorted(FAMILIES):
        task = make_task(random.Random(5), family=family)
        prepare(sandbox, task)
        request = episode_request(task, sandbox, thinking=True, strict=True)
        tools = [t["function"] for t in request["tools"]]
        assert all(t["strict"] for t in tools)
        prepare(sandbox, task)
        plain = episode_request(task, sandbox, thinking=True)
        assert [m["content"] for m in request["messages"] if m["role"] == "tool"] == \
            [m["content"] for m in plain["messages"] if m["role"] == "tool"]
        sample = chat_sample(request, family)
        tok = train_tokenizer([sample.text] * 3, vocab_size=400)
        lark = strict_tools_grammar(tools, thinking=True,
                                    single_tokens={t: tok.token_to_id(t) for t in (THINK_END, EOS, DSML)})
        tokens = GrammarTokenizer(tok, tok.get_vocab_size(), tok.token_to_id(EOS))
        for a, b in sample.spans:  # every assistant turn: reasoning, then calls or the answer, then EOS
            c = Constraint(Grammar(lark, THINK_END), tokens, 10_000)
            assert c.replay(tok.encode(sample.text[a:b], add_special_tokens=False).ids) and c.matcher.is_stopped()
        for m in request["messages"]:
            for call in m.get("tool_calls", []):
                tool = next(t for t in tools if t["name"] == call["function"]["name"])
                assert list(json.loads(call["function"]["arguments"])) == list(tool["parameters"]["properties"])


def test_agent_samples_offer_strict_tools_by_the_fraction_asked(sandbox):
    strict = [('"additionalProperties": false' in agent_sample(random.Random(i), sandbox, strict=0.5).text)
              for i in range(16)]
    assert 3 <= sum(strict) <= 13
    assert not any('"additionalProperties"' in agent_sample(random.Random(i), sandbox).text for i in range(4))
