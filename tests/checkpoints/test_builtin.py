"""The trained checkpoint that ships in the package: the default model, and it retrieves a passkey from far beyond
what its window layers reach (its card states the measured figures)."""

import json
import random
import re
from pathlib import Path

from tokenizers import Tokenizer

from dsv4.checkpoints import builtin
from dsv4.cli.chat_cmds import default_checkpoint
from dsv4.encoding import encode_request
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.train.data import TokenCounter
from dsv4.train.retrieval import passkey


def test_the_builtin_checkpoint_is_the_default_model():
    path = builtin()
    assert path is not None and default_checkpoint() == path
    assert (path / "card.md").is_file()


def test_the_builtin_model_retrieves_a_passkey_3000_tokens_back():
    # 4 layers x 128-token windows relay at most 512 tokens: the key comes back through the compressed entries
    path = builtin()
    count = TokenCounter(Tokenizer.from_file(str(path / "tokenizer.json"))).count
    needle = passkey(random.Random(7), 4096, 0.2, count)
    prompt = encode_request({**needle.request, "messages": needle.request["messages"][:1]})
    engine = Engine.from_pretrained(path, EngineConfig())
    out = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=16))[0]
    assert out.text == f"The pass key is {needle.value}."


def test_the_builtin_model_runs_make_runs_agent_episode(tmp_path, capsys):
    # what `make run` shows: the model lists the directory, reads the right file and answers with its value, through
    # the in-process server, the agent loop and a sandbox (the trajectory's folder made on the way)
    from dsv4.cli import main

    workspace = Path(__file__).parents[2] / "examples" / "workspace"
    assert main(["agent", "Find the tango file in settings and tell me its port.", "--upload", str(workspace),
                 "--trajectory", str(tmp_path / "runs" / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "-> bash ok:" in out and "-> read_file ok: port: 17365" in out
    # the value is copied digit by digit from the tool result, the model's weakest copy (its eval counts it): with
    # pytest's thread count the float sums differ from the CLI's and a marginal digit can flip, so only its shape
    assert re.fullmatch(r"The port for tango is \d{5}\.", out.strip().splitlines()[-1])
    steps = json.loads((tmp_path / "runs" / "t.json").read_text())["steps"]
    assert [s.get("warnings") or [] for s in steps] == [[]] * len(steps)  # its own DSML: nothing recovered
