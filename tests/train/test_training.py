import torch

from dsv4.engine import Engine, SamplingParams
from dsv4.model import load_model
from dsv4.train.data import IGNORE
from dsv4.train.forward import train_forward
from dsv4.train.losses import losses
from dsv4.train.optim import ExpertBalancer, optimizers
from dsv4.train.tokenizer import train_tokenizer
from dsv4.train.trainer import Progress, save

from .conftest import TINY

G = torch.Generator().manual_seed(0)


def test_loss_falls_on_a_repeated_batch(model):
    ids = torch.randint(0, TINY.vocab_size, (1, 64), generator=G)
    targets = torch.cat([ids[:, 1:], torch.full((1, 1), IGNORE)], dim=1)
    opts = optimizers(model, lr=3e-3)
    first = None
    for _ in range(8):
        parts = losses(train_forward(model, ids), targets)
        first = first or parts.items()
        for o in opts:
            o.zero_grad()
        parts.total(0.3).backward()
        for o in opts:
            o.step()
    last = parts.items()
    assert last["lm"] < 0.7 * first["lm"] and last["mtp"] < first["mtp"]


def test_indexer_kl_falls(model):
    ids = torch.randint(0, TINY.vocab_size, (1, 256), generator=G)
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if ".indexer." in n], lr=1e-2)
    kls = []
    for _ in range(15):
        kl = torch.stack(train_forward(model, ids, sparse=False).stats.index_kl).mean()
        kls.append(kl.item())
        opt.zero_grad()
        kl.backward()
        opt.step()
    assert kls[-1] < 0.5 * kls[0]


def test_balancer_moves_bias_against_the_load(model):
    balancer = ExpertBalancer(model, speed=0.1)
    gate = balancer.gates[0]
    with torch.no_grad():
        gate.bias.zero_()
        gate.bias[0] = 5.0  # expert 0 takes every token
        train_forward(model, torch.randint(0, TINY.vocab_size, (1, 32), generator=G))
    balancer.update()
    # the overloaded expert loses bias, no other expert (each at or below the mean load) does, the idle ones gain
    assert gate.bias[0] < 5.0 and (gate.bias[1:] >= 0).all() and (gate.bias[1:] > 0).any()
    balancer.close()


def test_checkpoint_loads_and_generates(model, tmp_path):
    tok = train_tokenizer(["hello world, the pass key is 12345"] * 10, vocab_size=300)
    save(tmp_path, model, tok, optimizers(model, 1e-3), Progress(step=3))
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_state.pt"} <= {
        p.name for p in tmp_path.iterdir()}
    loaded = load_model(tmp_path, dtype=torch.float32)
    ids = torch.randint(0, TINY.vocab_size, (1, 40), generator=G)
    with torch.no_grad():
        expected = train_forward(model, ids).logits
    # the checkpoint stores BF16 weights: the same predictions, logits within BF16 noise
    got = loaded(ids, all_logits=True)
    assert (got - expected).abs().mean() < 0.02 * expected.abs().mean()
    out = Engine.from_pretrained(tmp_path).generate(["hello"], SamplingParams(temperature=0, max_tokens=4))[0]
    assert len(out.token_ids) == 4
