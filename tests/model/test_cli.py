"""`dsv4 init-checkpoint` and `dsv4 inspect` through the CLI entry point."""

import json

import torch
from tokenizers import Tokenizer

from dsv4.cli import main
from dsv4.model import load_model, preset
from dsv4.model.checkpoint import write_config
from dsv4.model.summary import count_params


def test_init_checkpoint_tiny_is_loadable_and_covers_the_tokenizer(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["init-checkpoint", "--preset", "tiny", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert "warning" not in capsys.readouterr().out
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = tokenizer.encode("Hello, DeepSeek-V4! <｜end▁of▁sentence｜>").ids
    model = load_model(out, dtype=torch.float32)
    assert max(ids) < model.config.vocab_size == tokenizer.get_vocab_size() == 129280
    logits = model(torch.tensor([ids]), cache=model.new_cache(1, 64), start_pos=0)
    assert logits.shape == (1, 129280) and torch.isfinite(logits).all()

    assert main(["inspect", "--json", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    counts = count_params(preset("tiny"))
    assert summary["files_params"] == counts.total + counts.mtp  # headers agree with the config's shapes
    assert summary["layout"].endswith("WCHC")


def test_inspect_presets_print_published_sizes(tmp_path, capsys):
    for name, total, active, kv in (("v4-flash", "284B", "13.8B", "3514.25"), ("v4-pro", "1.6T", "49.8B", "5031.44")):
        write_config(preset(name), tmp_path)
        assert main(["inspect", str(tmp_path)]) == 0
        text = capsys.readouterr().out
        assert total in text and f"{active} active" in text and f"{kv} B/token" in text, text
