import pytest
import torch
from tokenizers import Tokenizer

from dsv4.cli import main
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
    return load_model(tiny_dir, dtype=torch.float32)


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    return Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
