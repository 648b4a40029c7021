"""`dsv4 chat`: a chat rendered, generated on a V4 checkpoint and parsed back, end to end."""

import argparse
import json
import re

import pytest
import torch

from dsv4.cli import main
from dsv4.cli.chat_cmds import generate_greedy
from dsv4.cli.model_cmds import init_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    init_checkpoint(argparse.Namespace(preset="tiny", seed=1, out=out))
    return out


def test_greedy_decode_from_cache_equals_full_recompute(tiny):
    from tokenizers import Tokenizer

    from dsv4.model import load_model

    model = load_model(tiny, dtype=torch.float32)
    tokenizer = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    ids = tokenizer.encode("<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>", add_special_tokens=False).ids
    new = generate_greedy(model, ids, 5, eos=-1, on_text=lambda t: None, tokenizer=tokenizer)
    expected = []
    with torch.inference_mode():
        for _ in range(5):  # no cache: the whole sequence again each step
            seq = torch.tensor([ids + expected])
            expected.append(int(model(seq, cache=model.new_cache(1, seq.shape[1]), start_pos=0)[0].argmax()))
    assert new == expected


def test_chat_command_streams_and_parses(tiny, tmp_path, capsys):
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"messages": [{"role": "user", "content": "Say hi."}],
                                   "thinking": {"type": "disabled"}}))
    assert main(["chat", "--model", str(tiny), "--request", str(request), "--max-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "<｜User｜>Say hi.<｜Assistant｜></think>'" in out  # the non-think generation header
    message = json.loads(out[out.index("{\n"):])
    assert message["role"] == "assistant" and "reasoning_content" not in message
    assert re.search(r"^[1-6] tokens in ", out, re.M)
