import pytest
import torch

from dsv4.model import Transformer
from dsv4.model.init import init_random_
from dsv4.train.forward import train_forward
from dsv4.train.optim import trained_parameters

from .conftest import TINY


def random_model(simulate: bool = True) -> Transformer:
    # the test weights of dsv4.model: every branch (sinks, hyper-connections, compressor gates) far from trivial
    return init_random_(Transformer(TINY.replace(simulate_kv_quant=simulate), torch.float32), seed=1)


def inference_logits(model: Transformer, ids: torch.Tensor):
    cache = model.new_cache(*ids.shape)
    h = model.hidden(ids, cache)
    return model.logits(h), model.mtp_logits(h[:, :-1], ids[:, 1:], cache, 0)


# 300 tokens: windows span block boundaries, 75 CSA entries > index_topk=64 (sparse selection), 2 HCA entries
IDS = torch.randint(0, TINY.vocab_size, (2, 300), generator=torch.Generator().manual_seed(0))


def test_training_logits_equal_inference_logits():
    # without the format simulation the two paths are the same math in another summation order
    model = random_model(simulate=False)
    ref, ref_mtp = inference_logits(model, IDS)
    trained_parameters(model)
    out = train_forward(model, IDS, sparse=True)
    torch.testing.assert_close(out.logits.detach(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out.mtp_logits[0].detach(), ref_mtp, atol=2e-5, rtol=1e-5)


def test_training_forward_rounds_kv_as_inference_does():
    # FP8/BF16/MXFP4 rounding moves these logits by up to ~2 (mean ~0.03); the paths then differ only where
    # last-bit differences upstream flip a rounding
    model = random_model(simulate=True)
    ref, _ = inference_logits(model, IDS)
    trained_parameters(model)
    out = train_forward(model, IDS, sparse=True).logits.detach()
    diff = (out - ref).abs()
    assert diff.max() < 1e-2 and diff.mean() < 1e-3


def test_dense_warmup_attends_to_entries_the_indexer_leaves_out():
    model, ids = random_model(), IDS[:1]
    with torch.no_grad():
        dense, sparse = train_forward(model, ids, sparse=False), train_forward(model, ids, sparse=True)
    # positions whose query sees at most index_topk entries agree; later ones differ
    torch.testing.assert_close(dense.logits[:, :256], sparse.logits[:, :256])
    assert (dense.logits[:, 260:] - sparse.logits[:, 260:]).abs().max() > 1e-3


def test_gradients_reach_every_trained_parameter(model):
    ids = torch.randint(0, TINY.vocab_size, (1, 300), generator=torch.Generator().manual_seed(0))
    out = train_forward(model, ids, sparse=True)
    (out.logits.logsumexp(-1).mean() + out.mtp_logits[0].logsumexp(-1).mean() + sum(out.stats.index_kl)).backward()
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert not [n for n, p in model.named_parameters() if p.is_floating_point() and n not in trained
                and not n.endswith("gate.bias")]
    dead = [n for n, p in trained.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


def test_indexer_learns_only_from_its_loss(model):
    ids = torch.randint(0, TINY.vocab_size, (1, 300), generator=torch.Generator().manual_seed(0))
    out = train_forward(model, ids, sparse=True)
    sum(out.stats.index_kl).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(".indexer." in n for n in with_grad)


def test_bad_ids_shape():
    with pytest.raises(ValueError, match="ids must be"):
        train_forward(Transformer(TINY, torch.float32), torch.zeros(5, dtype=torch.long))
