"""A tiny V4 in the trainable weight formats (BF16, no FP8/FP4), random training weights."""

import pytest
import torch

from dsv4.model import Transformer, preset
from dsv4.train.init import init_for_training_
from dsv4.train.optim import trained_parameters

TINY = preset("test").replace(dtype="bf16", scale_fmt=None, expert_dtype=None)


@pytest.fixture
def model() -> Transformer:
    m = init_for_training_(Transformer(TINY, torch.float32), seed=0)
    trained_parameters(m)
    return m
