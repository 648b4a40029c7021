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


def test_shared_prefix_runs_once_with_the_same_logits_losses_and_gradients():
    # rows sharing their first 300 tokens (as agent episodes share the system prompt): the prefix of 256 tokens run
    # once gives the whole batch's logits from position 256 on, its index KL and its gradients
    from dsv4.train.data import IGNORE
    from dsv4.train.forward import shared_prefix
    from dsv4.train.losses import losses

    g = torch.Generator().manual_seed(3)
    ids = torch.cat([IDS[:1, :300].expand(3, -1), torch.randint(0, TINY.vocab_size, (3, 140), generator=g)], 1)
    targets = torch.full_like(ids, IGNORE)
    targets[:, 300:-1] = ids[:, 301:]
    prefix = shared_prefix(ids, n_mtp=1)
    assert prefix == 256
    grads, outs = [], []
    for p in (0, prefix):
        model = random_model(simulate=False)  # rounding would turn summation-order bits into flipped roundings
        trained_parameters(model)
        out = train_forward(model, ids, sparse=True, prefix=p)
        parts = losses(out, targets)
        parts.total(0.3).backward()
        outs.append((out, parts))
        grads.append({n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None})
    (full, full_loss), (shared, shared_loss) = outs
    torch.testing.assert_close(shared.logits, full.logits[:, prefix:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(shared.mtp_logits[0], full.mtp_logits[0][:, prefix:], atol=1e-4, rtol=1e-4)
    for name in ("lm", "mtp", "index_kl"):
        torch.testing.assert_close(getattr(shared_loss, name), getattr(full_loss, name), atol=1e-5, rtol=1e-4)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-4, rtol=1e-3, msg=n)


def test_shared_prefix_is_checked():
    from dsv4.train.forward import shared_prefix

    model = random_model()
    ids = IDS[:, :300]  # two different rows
    assert shared_prefix(ids, n_mtp=1) == 0
    with pytest.raises(ValueError, match="rows differ"):
        train_forward(model, ids, prefix=128)
    with pytest.raises(ValueError, match="multiple of 128"):
        train_forward(model, IDS[:1].expand(2, -1), prefix=100)
