import json

import pytest

from dsv4.cli import main
from dsv4.engine.generation_config import sampling_defaults
from dsv4.model import load_model
from dsv4.train.schedule import Schedule
from dsv4.train.trainer import TrainConfig, train

from .conftest import TINY


def test_a_run_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    cfg = dict(out=tmp_path, model=TINY, tokenizer_samples=24, tokens_per_batch=256, log_every=1, agent_fraction=0.0,
               schedule=Schedule(min_len=256, max_len=256))
    lines = []
    train(TrainConfig(steps=2, **cfg), log=lines.append)
    assert json.loads((tmp_path / "train_progress.json").read_text())["step"] == 2
    assert load_model(tmp_path).config.vocab_size == len(json.loads((tmp_path / "tokenizer.json").read_text())[
        "model"]["vocab"])
    assert sampling_defaults(tmp_path) == {"temperature": 0.0}  # served greedy, as it is measured
    assert lines[0].startswith("new model") and "step 2 |" in lines[-2] and lines[-1].startswith("done: 2 steps")
    train(TrainConfig(steps=3, **cfg), log=lines.append)
    assert lines[-3].startswith("resumed at step 2") and lines[-1].startswith("done: 3 steps")


def test_run_length_is_minutes_or_steps(tmp_path):
    with pytest.raises(ValueError, match="exactly one of minutes"):
        TrainConfig(out=tmp_path, steps=3, minutes=2.0)
    with pytest.raises(ValueError, match="BF16 weight formats"):
        TrainConfig(out=tmp_path, steps=3, model=TINY.replace(dtype="fp8"))
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path)])
    for name in ("strict_tools", "recovery"):
        with pytest.raises(ValueError, match=f"{name} is a fraction of agent episodes"):
            TrainConfig(out=tmp_path, steps=3, **{name: 1.5})
    with pytest.raises(SystemExit, match="recovery is a fraction"):
        main(["train", "--out", str(tmp_path), "--steps", "3", "--recovery-fraction", "-0.1"])


def test_schedule_grows_lengths_and_decays_the_learning_rate():
    import random

    s = Schedule(lr=1e-3, min_len=256, max_len=4096, reach_max=0.5, warmup=0.1, dense_until=0.2)
    rng = random.Random(0)
    assert {s.length(0.0, rng) for _ in range(20)} == {256}
    assert max(s.length(0.9, rng) for _ in range(200)) > 2048 and s.longest(0.5) == 4096
    assert s.learning_rate(0.05) == pytest.approx(5e-4) and s.learning_rate(1.0) == pytest.approx(1e-4)
    assert not s.sparse(0.1) and s.sparse(0.3)


def test_copy_batches_fill_their_budget_and_are_trained_on_the_copy_only(tmp_path):
    import random

    from dsv4.sandbox import Sandbox
    from dsv4.train.data import IGNORE, BatchStream, copy_sample
    from dsv4.train.tokenizer import train_tokenizer

    tok = train_tokenizer([copy_sample(random.Random(i)).text for i in range(50)], vocab_size=400)
    with pytest.raises(ValueError, match="sum to at most 1"):
        BatchStream(tok, None, agent_fraction=0.9, copy_fraction=0.2)
    with Sandbox.create("process") as sb:
        batch = BatchStream(tok, sb, tokens_per_batch=1024, agent_fraction=0.0, copy_fraction=1.0).next(256)
    assert batch.kind == "copy" and batch.ids.size(0) > 2 and batch.ids.numel() <= 1024
    for row, targets in zip(batch.ids, batch.targets, strict=True):
        text = tok.decode(row.tolist(), skip_special_tokens=False)
        trained = tok.decode(targets[targets != IGNORE].tolist(), skip_special_tokens=False)
        copied = trained.removesuffix("<｜end▁of▁sentence｜>")
        assert copied and f": {copied}<｜Assistant｜>" in text.replace("</think>", "")
