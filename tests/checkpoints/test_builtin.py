"""The trained checkpoint that ships in the package: the default model, and it retrieves a passkey from far beyond
what its window layers reach (its card states the measured figures)."""

import random

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
