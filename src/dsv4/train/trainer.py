"""`train`: builds (or resumes) a model, trains it on the synthetic stream, and keeps a usable checkpoint in the
released layout in `out` (config.json, model.safetensors, tokenizer.json, generation_config.json), rewritten every
`save_minutes`, plus `train_state.pt` (float32 weights, optimizer states, progress) to resume from.

The run's length is `steps`, or a time budget in `minutes`; the schedules follow its progress either way.
"""

import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from dsv4.model import ModelConfig, Transformer
from dsv4.model.writer import write_checkpoint
from dsv4.sandbox import Sandbox

from .builtin import BUILTIN
from .data import BatchStream, agent_sample, retrieval_sample
from .forward import train_forward
from .init import init_for_training_
from .losses import losses
from .optim import ExpertBalancer, optimizers
from .schedule import Schedule
from .tokenizer import train_tokenizer
from .words import DIRS, KEYS, NOUNS, SUBJECTS

STATE = "train_state.pt"


@dataclass
class TrainConfig:
    out: Path
    model: ModelConfig = BUILTIN
    minutes: float | None = None
    steps: int | None = None
    seed: int = 0
    tokens_per_batch: int = 3072
    agent_fraction: float = 0.55
    copy_fraction: float = 0.15
    invented: float = 0.5  # of agent tasks' names: made up, so names are copied rather than remembered
    unfamiliar: float = 0.5  # of agent requests: with made-up words that are not names (phrasing.py)
    strict_tools: float = 0.0  # of agent episodes: tools in OpenAI's strict form (`dsv4 agent --strict-tools`)
    recovery: float = 0.0  # of agent episodes (families with one): a call made wrong first, then recovered
    mtp_weight: float = 0.3
    balance_speed: float = 1e-3
    save_minutes: float = 10.0
    log_every: int = 10
    tokenizer_samples: int = 1500
    schedule: Schedule = field(default_factory=Schedule)

    def __post_init__(self):
        for name in ("strict_tools", "recovery"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a fraction of agent episodes in [0, 1]; got {getattr(self, name)}")
        if (self.minutes is None) == (self.steps is None):
            raise ValueError("give exactly one of minutes (a time budget) or steps")
        if self.model.dtype != "bf16" or self.model.expert_dtype is not None:
            raise ValueError(f"training needs BF16 weight formats (dtype='bf16', expert_dtype=None); got "
                             f"dtype={self.model.dtype!r}, expert_dtype={self.model.expert_dtype!r}")


@dataclass
class Progress:
    step: int = 0
    seconds: float = 0.0
    tokens: int = 0

    def fraction(self, cfg: TrainConfig) -> float:
        return self.step / cfg.steps if cfg.steps else self.seconds / (cfg.minutes * 60)


def build_tokenizer(cfg: TrainConfig, sandbox: Sandbox) -> Tokenizer:
    """The vocabulary learned from a sample of the training stream's texts (agent episodes and retrieval filler),
    the word pools' names left spelled letter by letter."""
    rng = random.Random(cfg.seed + 1)
    texts = [agent_sample(rng, sandbox, strict=cfg.strict_tools).text for _ in range(cfg.tokenizer_samples * 3 // 4)]
    texts += [retrieval_sample(rng, 1024, lambda s: len(s) // 4).text for _ in range(cfg.tokenizer_samples // 4)]
    return train_tokenizer(texts, cfg.model.vocab_size, spelled=NOUNS + KEYS + SUBJECTS + DIRS)


def train(cfg: TrainConfig, log=print) -> Path:
    cfg.out.mkdir(parents=True, exist_ok=True)
    with Sandbox.create("process") as sandbox:
        resumed = (cfg.out / STATE).is_file()
        tokenizer = Tokenizer.from_file(str(cfg.out / "tokenizer.json")) if resumed else build_tokenizer(cfg, sandbox)
        config = cfg.model.replace(vocab_size=tokenizer.get_vocab_size())
        model = init_for_training_(Transformer(config, torch.float32), cfg.seed)
        opts = optimizers(model, cfg.schedule.lr)
        progress = _resume(cfg.out / STATE, model, opts) if resumed else Progress()
        log(f"{'resumed at step ' + str(progress.step) if resumed else 'new model'}: "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, vocab {config.vocab_size}, "
            f"{cfg.minutes and str(cfg.minutes) + ' min' or str(cfg.steps) + ' steps'} -> {cfg.out}")
        stream = BatchStream(tokenizer, sandbox, cfg.seed + progress.step, cfg.tokens_per_batch, cfg.agent_fraction,
                             cfg.copy_fraction, cfg.invented, cfg.unfamiliar, cfg.strict_tools, cfg.recovery)
        balancer = ExpertBalancer(model, cfg.balance_speed)
        _loop(cfg, model, tokenizer, opts, stream, balancer, progress, log)
    return cfg.out


def _loop(cfg, model, tokenizer, opts, stream, balancer, progress: Progress, log) -> None:
    rng = random.Random(cfg.seed + progress.step + 7)
    last_save, window = time.monotonic(), []
    while progress.fraction(cfg) < 1:
        f = progress.fraction(cfg)
        t0 = time.monotonic()
        batch = stream.next(cfg.schedule.length(f, rng))
        lr = cfg.schedule.learning_rate(f)
        for opt in opts:
            for group in opt.param_groups:
                group["lr"] = lr
        out = train_forward(model, batch.ids, sparse=cfg.schedule.sparse(f), prefix=batch.prefix)
        parts = losses(out, batch.targets)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        parts.total(cfg.mtp_weight).backward()
        for opt in opts:
            opt.step()
        imbalance = balancer.update()
        dt = time.monotonic() - t0
        progress.step, progress.seconds, progress.tokens = progress.step + 1, progress.seconds + dt, \
            progress.tokens + batch.n_tokens
        window.append((batch, parts.items(), dt, imbalance))
        if progress.step % cfg.log_every == 0:
            log(_line(cfg, progress, window, lr))
            window = []
        if time.monotonic() - last_save >= cfg.save_minutes * 60:
            save(cfg.out, model, tokenizer, opts, progress)
            last_save = time.monotonic()
    save(cfg.out, model, tokenizer, opts, progress)
    log(f"done: {progress.step} steps, {progress.tokens} tokens, {progress.seconds / 60:.1f} min -> {cfg.out}")


def _line(cfg: TrainConfig, p: Progress, window, lr: float) -> str:
    f = min(1.0, p.fraction(cfg))
    secs = sum(w[2] for w in window)
    toks = sum(w[0].n_tokens for w in window)
    mean = {k: sum(w[1][k] for w in window) / len(window) for k in window[0][1]}
    by_kind = {kind: [w[1]["lm"] for w in window if w[0].kind == kind] for kind in ("agent", "copy", "retrieval")}
    kinds = " ".join(f"{kind} {sum(v) / len(v):.3f}" for kind, v in by_kind.items() if v)
    eta = p.seconds * (1 - f) / max(f, 1e-9)
    bar = "#" * int(20 * f) + "." * (20 - int(20 * f))
    return (f"[{bar}] {100 * f:5.1f}% step {p.step} | lm {mean['lm']:.3f} ({kinds}) mtp {mean['mtp']:.3f} "
            f"idx {mean['index_kl']:.3f} | len {max(w[0].ids.size(1) for w in window)} "
            f"{toks / secs:.0f} tok/s lr {lr:.2e} load {max(w[3] for w in window):.2f} | "
            f"{p.seconds / 60:.1f} min, ETA {eta / 60:.1f} min")


def save(out: Path, model: Transformer, tokenizer: Tokenizer, opts, progress: Progress) -> None:
    """The released layout (BF16 weights) and the resume state, each file replaced atomically."""
    tmp = out / ".writing"
    shutil.rmtree(tmp, ignore_errors=True)
    write_checkpoint(tmp, model)
    tokenizer.save(str(tmp / "tokenizer.json"))
    # its measurements are greedy; sampled at temperature 1 a model this small misspells what it copies
    (tmp / "generation_config.json").write_text(json.dumps({"do_sample": False}) + "\n")
    (tmp / "train_progress.json").write_text(json.dumps(asdict(progress)) + "\n")
    torch.save({"model": model.state_dict(), "optimizers": [o.state_dict() for o in opts],
                "progress": asdict(progress)}, tmp / STATE)
    for file in tmp.iterdir():
        os.replace(file, out / file.name)
    tmp.rmdir()


def _resume(path: Path, model: Transformer, opts) -> Progress:
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        model.load_state_dict(state["model"])
    for opt, s in zip(opts, state["optimizers"], strict=True):
        opt.load_state_dict(s)
    return Progress(**state["progress"])


def stdout_log(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
