"""The eval commands' mechanics on a tiny random checkpoint (their accuracy is the trained model's business)."""

import random
import re
from types import SimpleNamespace

import pytest
import torch

from dsv4.agent import Trajectory
from dsv4.cli import main
from dsv4.model import Transformer
from dsv4.sandbox import Sandbox
from dsv4.train.data import agent_sample
from dsv4.train.evals import (
    held_out_tasks,
    passkey_correct,
    passkey_digits,
    reasoning_retained,
    score_run,
    states,
)
from dsv4.train.init import init_for_training_
from dsv4.train.optim import optimizers
from dsv4.train.tokenizer import train_tokenizer
from dsv4.train.trainer import Progress, save

from .conftest import TINY


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    rng = random.Random(0)
    with Sandbox.create("process") as sb:
        texts = [agent_sample(rng, sb).text for _ in range(30)]
    tok = train_tokenizer(texts + ["The pass key is 12345. Remember it."], vocab_size=600)
    model = init_for_training_(Transformer(TINY.replace(vocab_size=tok.get_vocab_size()), torch.float32))
    out = tmp_path_factory.mktemp("ckpt")
    save(out, model, tok, optimizers(model, 1e-3), Progress())
    return out


def test_passkey_prints_a_grid_then_the_overall_accuracy(checkpoint, capsys):
    assert main(["eval", "passkey", "--checkpoint", str(checkpoint), "--lengths", "256,384", "--depths", "0,1",
                 "--samples", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-5].split()[-3:] == ["0.00", "1.00", "all"]
    assert [line.split()[0] for line in lines[-4:-2]] == ["256", "384"]
    assert lines[-2].startswith("digits in place: ")
    assert re.fullmatch(r"passkey exact-match: \d+\.\d% \(\d/4\)", lines[-1])


def test_passkey_scoring():
    assert passkey_correct("The pass key is 71432.", "71432") and passkey_digits("is 71932", "71432") == 0.8
    assert not passkey_correct("The pass key is 7143.", "71432") and not passkey_correct("no digits", "1")


def test_agent_eval_runs_tasks_through_server_agent_and_sandbox(checkpoint, capsys, tmp_path):
    assert main(["eval", "agent", "--checkpoint", str(checkpoint), "--tasks", "1", "--max-steps", "1",
                 "--trajectories", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"agent success: \d+\.\d% \(\d/1\)", lines[-1])
    assert re.fullmatch(r"by family: compute [01]/1", lines[-2])
    assert lines[-3].startswith("valid DSML: ")
    assert re.fullmatch(r"reasoning retained: \d+ of \d+ tool-call turns' reasoning in the next request's prompt",
                        lines[-4])
    assert lines[-5].startswith("compute ") and " steps 1 " in lines[-5]  # the task's row
    saved = Trajectory.load(tmp_path / "runs" / "00-compute.json")  # the run, to read why it failed
    assert saved.messages[1].content == held_out_tasks(1)[0].prompt and len(saved.steps) == 1


def test_a_held_out_task_is_solved_by_its_own_plan():
    task = next(t for t in held_out_tasks(6) if t.family == "write_file")  # the answer and the file both count
    message = SimpleNamespace(role="assistant", content=task.answer)
    steps = [SimpleNamespace(tool_results=[SimpleNamespace(output="wrote 9 bytes")], warnings=[]),
             SimpleNamespace(tool_results=[], warnings=[])]
    result = score_run(task, "finished", [message], steps, lambda path: task.expect_file[1])
    assert result.solved and result.valid_calls == result.tool_calls == 1 and result.steps == 2
    wrong_file = score_run(task, "finished", [message], steps, lambda path: "other")
    assert not wrong_file.solved


def test_an_answer_counts_only_where_it_states_the_value_whole():
    # run v9 answered "201 - 10 + 7607 = 77988." for 7798: a substring match had scored it solved
    assert states("201 - 10 + 7607 = 7798.", "7798") and states("stash/acorn.md mentions acorn.", "acorn.md")
    assert not states("201 - 10 + 7607 = 77988.", "7798") and not states("it has 55 lines", "5")
    assert not states("stash/bacorn.md", "acorn.md") and not states("The port is 17365", "1736")
    task = next(t for t in held_out_tasks(6) if t.family == "compute")
    wrong = SimpleNamespace(role="assistant", content=task.answer.replace(task.expect_in_answer,
                                                                          task.expect_in_answer + "8"))
    assert not score_run(task, "finished", [wrong], [], lambda p: None).solved


def test_calls_the_tools_refused_are_not_valid_dsml():
    task = held_out_tasks(1)[0]
    msgs = [SimpleNamespace(role="assistant", content="<｜DSML｜invoke name=\"x\">"),
            SimpleNamespace(role="assistant", content="no")]
    steps = [SimpleNamespace(tool_results=[SimpleNamespace(output="error: invalid arguments for bash: ...")],
                             warnings=[]),
             SimpleNamespace(tool_results=[SimpleNamespace(output="ok")], warnings=[{"message": "recovered"}])]
    r = score_run(task, "finished", msgs, steps, lambda p: None)
    assert (r.tool_calls, r.valid_calls, r.solved) == (3, 0, False)


def test_seen_kind_tasks_come_from_the_training_pools():
    from dsv4.train.words import DIRS, split

    seen, held = held_out_tasks(12, held_out=False), held_out_tasks(12)
    dirs = lambda tasks: {p.split("/")[0] for t in tasks for p in t.files}  # noqa: E731
    assert dirs(seen) <= set(split(DIRS, False)) and dirs(held) <= set(split(DIRS, True))


def test_reasoning_retention_counts_tool_call_turns_whose_reasoning_the_next_prompt_renders():
    tools = [{"type": "function", "function": {"name": "bash", "description": "Run.", "parameters": {
        "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]
    call = {"id": "c0", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}
    turn = {"role": "assistant", "content": "", "tool_calls": [call], "reasoning_content": "List it first."}
    convo = [{"role": "user", "content": "What is here?"}, turn, {"role": "tool", "tool_call_id": "c0", "content": "a"},
             {"role": "assistant", "content": "a", "reasoning_content": "Done."}]
    assert reasoning_retained(convo, tools) == (1, 1)
    stripped = {k: v for k, v in turn.items() if k != "reasoning_content"}  # an agent that drops it
    assert reasoning_retained([convo[0], stripped, *convo[2:]], tools) == (1, 0)
    assert reasoning_retained(convo[:1], tools) == (0, 0)


def test_the_eval_tasks_stay_the_ones_every_checkpoint_was_measured_on():
    """Options of the training stream at their eval values (no invented names, no unfamiliar words) draw nothing,
    so the held-out and seen-kind tasks are the same across runs and checkpoints compare."""
    held, seen = held_out_tasks(6), held_out_tasks(6, held_out=False)
    assert held[0].prompt == "Calculate 262 * 9 + 6677 in the terminal."
    # (the seen-kind tasks are drawn from the training templates: these since session 17 widened them to 28-30 a
    # family; run v11's 12/12 was measured on 86bb962's 15-16)
    assert seen[0].prompt == "I want the value of 262 * 9 + 6677; use the shell. Thank you!"
    assert seen[1].prompt == "Check how many lines the file settings/oyster.log holds."
