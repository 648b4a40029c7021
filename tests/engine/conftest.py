import pytest
import torch
from tokenizers import Tokenizer

from dsv4.cli import main
from dsv4.engine import OutputAccumulator
from dsv4.model import load_model

from ..model.conftest import _one_torch_thread  # noqa: F401  (one intra-op thread on the shared machine)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random-weight tiny checkpoint with the real tokenizer, written by `dsv4 init-checkpoint`."""
    out = tmp_path_factory.mktemp("tiny")
    assert main(["init-checkpoint", "--preset", "tiny", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    # The tests compare paths token for token (batching, chunking, preemption): without the FP8 activation rounding
    # they agree to float32 roundoff; with it a 1e-7 difference can flip an FP8 step and, in a random model's flat
    # 129K-token logits, the argmax. test_engine_fp8.py judges the engine with the rounding on.
    return load_model(tiny_dir, dtype=torch.float32, simulate_act_quant=False)


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    return Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))


class Collector:
    """Steps an engine and sums every request's deltas up (`outputs[request_id]`, a `RequestOutput` once it is
    asked for): what a caller that drives `Engine.step()` itself keeps."""

    def __init__(self, engine):
        self.engine, self.totals = engine, {}

    def step(self) -> list:
        deltas = self.engine.step()
        for d in deltas:
            if d.request_id not in self.totals:
                self.totals[d.request_id] = OutputAccumulator(d.request_id, [], d.logprobs is not None)
            self.totals[d.request_id].add(d)
        return deltas

    def until_done(self, *request_ids: int) -> list:
        """Steps until the requests have finished; their outputs."""
        while any(i not in self.totals or not self.totals[i].finished for i in request_ids):
            self.step()
        return [self.output(i) for i in request_ids]

    def output(self, request_id: int):
        return self.totals[request_id].output()

    def num_output(self, request_id: int) -> int:
        return len(self.totals[request_id].token_ids) if request_id in self.totals else 0
