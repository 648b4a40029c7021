"""The indexer's decode scores from the packed cache (`dsv4_cpu::index_scores_packed`) against decoding the keys
and scoring them in torch: an eager engine's greedy tokens and logprobs over contexts past the indexer's top-k."""

import torch

from dsv4 import kernels
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

SCORED = SamplingParams(temperature=0, max_tokens=10, logprobs=2)


def test_packed_scores_decode_as_decoded_keys(monkeypatch):
    assert kernels.enable()
    config = preset("test").replace(index_topk=16, simulate_act_quant=False)
    model = init_random_(Transformer(config, torch.float32), seed=6).eval()
    g = torch.Generator().manual_seed(7)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (700, 515)]  # 175 / 128 CSA entries
    op, calls = kernels.op, []

    def counted(name, on=None):
        if name != "index_scores_packed":
            return op(name, on)
        return lambda *args: calls.append(1) or op(name, on)(*args)

    monkeypatch.setattr(kernels, "op", counted)
    packed = Engine(model, None, EngineConfig(num_blocks=24, max_num_seqs=2)).generate(prompts, SCORED)
    assert len(calls) >= 9 * 2  # every decode step's CSA indexers (the test preset has two)
    monkeypatch.setattr(kernels, "op", lambda name, on=None: None if name == "index_scores_packed" else op(name, on))
    decoded = Engine(model, None, EngineConfig(num_blocks=24, max_num_seqs=2)).generate(prompts, SCORED)
    for a, b in zip(packed, decoded, strict=True):
        assert a.token_ids == b.token_ids
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            assert abs(x.logprob - y.logprob) < 1e-4
