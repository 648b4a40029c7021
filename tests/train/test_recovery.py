import random
from dataclasses import replace

import pytest

from dsv4.sandbox import Sandbox
from dsv4.train.data import agent_sample
from dsv4.train.episodes import Call, SlipMissed, episode_request, make_task, mistaken_turns, prepare
from dsv4.train.recovery import LIST_LINES, LIST_PATHS, RECOVERABLE, slip, with_recovery
from dsv4.train.sample import chat_sample


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox.create("process") as sb:
        yield sb


def _recovered(sandbox, family: str, misread: float, start: int = 0):
    """(task, its recovery episode, the episode's request) of the first seed from `start` whose wrong call fails."""
    for seed in range(start, start + 200):
        rng = random.Random(seed)
        task = make_task(rng, family=family, invented=0.5)
        recovered = with_recovery(rng, task, misread=misread)
        if recovered is not None:
            prepare(sandbox, recovered)
            try:
                return task, recovered, episode_request(recovered, sandbox)
            except SlipMissed:  # the slipped name still matched (grep finds `ndia` in `india`)
                continue
    raise AssertionError(f"no recovery episode for {family}")


@pytest.mark.parametrize("misread", [0.0, 1.0])
@pytest.mark.parametrize("family", RECOVERABLE)
def test_a_recovery_episode_fails_lists_the_workspace_then_solves_the_task(sandbox, family, misread):
    task, recovered, request = _recovered(sandbox, family, misread)
    messages = request["messages"]
    (wrong,) = mistaken_turns(recovered)
    assert messages[wrong]["role"] == "assistant" and messages[wrong + 1]["role"] == "tool"
    error = messages[wrong + 1]["content"]
    assert "No such file or directory" in error or error == "exit code: 1"  # what the real tools say
    listing = messages[wrong + 2]["tool_calls"][0]["function"]["arguments"]
    assert listing in ('{"command": "ls -R"}', '{"command": "grep -r ."}')
    # the listing shows the name the wrong call missed, and the plan then goes on as the plain task's
    i = (wrong - 2) // 2
    assert recovered.expect_in_results[i + 1] in messages[wrong + 3]["content"]
    assert recovered.calls[i + 2:] == task.calls[i:]
    assert messages[-1]["content"] == task.answer and task.expect_in_answer in task.answer
    sample = chat_sample(request, family, mistaken_turns(recovered))
    trained = "".join(sample.text[a:b] for a, b in sample.spans)
    assert len(sample.spans) == len(recovered.calls)  # every turn but the wrong one, and the answer
    (wrong_value,) = recovered.calls[i].args.values()
    assert wrong_value != next(iter(task.calls[i].args.values()))
    assert wrong_value in sample.text and wrong_value not in trained  # in the context, never a target
    assert LIST_PATHS.reasoning in trained or LIST_LINES.reasoning in trained


def test_a_slipped_grep_word_is_recovered_by_listing_the_lines(sandbox):
    for seed in range(300):
        _, recovered, request = _recovered(sandbox, "grep_file", 0.0, seed)
        wrong = next(c for c in recovered.calls if c.mistaken)
        if wrong.args["command"].split()[3] == recovered.calls[-1].args["command"].split()[3]:  # same directory
            break
    else:
        raise AssertionError("no grep episode with a slipped word")
    messages = request["messages"]
    (w,) = mistaken_turns(recovered)
    assert messages[w + 1]["content"] == "exit code: 1"
    assert messages[w + 2]["reasoning_content"] == LIST_LINES.reasoning


@pytest.mark.parametrize("family", ["compute", "write_file"])
def test_families_whose_wrong_call_would_not_fail_have_no_recovery(family):
    assert with_recovery(random.Random(0), make_task(random.Random(0), family=family)) is None


def test_a_slip_is_one_edit_of_letters():
    rng = random.Random(0)
    for word in ["boreas", "cypress", "vault", "ab", "zzz"]:
        for _ in range(50):
            out = slip(rng, word)
            assert out != word and out.isalpha() and abs(len(out) - len(word)) <= 1
            if len(out) == len(word):  # a letter changed, or two neighbours swapped
                diff = [k for k in range(len(word)) if out[k] != word[k]]
                assert len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and sorted(out) == sorted(word))


def test_a_wrong_call_that_succeeds_is_refused(sandbox):
    task = make_task(random.Random(1), family="read_value")
    fake = Call("still right", task.calls[0].tool, task.calls[0].args, mistaken=True)
    bad = replace(task, calls=[fake, *task.calls], expect_in_results=["", *task.expect_in_results])
    prepare(sandbox, bad)
    with pytest.raises(SlipMissed, match="the wrong call"):
        episode_request(bad, sandbox)


def test_agent_samples_recover_by_the_fraction_asked(sandbox):
    plain = [agent_sample(random.Random(i), sandbox).text for i in range(6)]
    assert plain == [agent_sample(random.Random(i), sandbox, recovery=0.0).text for i in range(6)]
    kinds = [agent_sample(random.Random(i), sandbox, recovery=1.0).kind for i in range(30)]
    recoverable = [k for k in kinds if k.split("/")[1] in RECOVERABLE]
    assert recoverable and sum(k.endswith("/recovery") for k in recoverable) >= 0.8 * len(recoverable)
    assert not any(k.endswith("/recovery") for k in kinds if k.split("/")[1] not in RECOVERABLE)
