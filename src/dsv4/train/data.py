"""The training stream: batches of agent episodes (run live in a sandbox) and retrieval samples at the length the
curriculum asks for, tokenized, padded and masked (loss only on what the assistant writes)."""

import functools
import random
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from dsv4.sandbox import Sandbox, SandboxError

from .episodes import SlipMissed, episode_request, make_task, mistaken_turns, prepare
from .forward import PREFIX_ALIGN, shared_prefix
from .recovery import with_recovery
from .retrieval import copy_request, key_values, passkey
from .sample import Sample, chat_sample, tokenize

IGNORE = -100  # target of a position without loss


@dataclass
class Batch:
    ids: torch.Tensor  # [b,s] token ids (padded with EOS)
    targets: torch.Tensor  # [b,s] the next token where it is trained on, IGNORE elsewhere
    kind: str
    prefix: int = 0  # tokens every row shares that the forward runs once (see forward.shared_prefix)

    @property
    def n_tokens(self) -> int:
        return self.ids.numel()

    @property
    def cost(self) -> int:
        """The tokens the forward runs: the shared prefix once, then each row's own."""
        return self.n_tokens - (self.ids.size(0) - 1) * self.prefix


def agent_sample(rng: random.Random, sandbox: Sandbox, held_out: bool = False, think_fraction: float = 0.8,
                 family: str | None = None, invented: float = 0.0, unfamiliar: float = 0.0,
                 strict: float = 0.0, recovery: float = 0.0) -> Sample:
    """An agent episode; a fraction `strict` of them offer the tools in strict form, a fraction `recovery` of those
    whose family has one first make one call wrong and recover (recovery.py). No draw for a fraction at 0: the stream
    stays as it was."""
    task = make_task(rng, held_out, family, invented, unfamiliar)
    prepare(sandbox, task)
    thinking = rng.random() < think_fraction
    strict_form = strict > 0 and rng.random() < strict
    recovered = with_recovery(rng, task) if recovery > 0 and rng.random() < recovery else None
    if recovered is not None:
        try:
            request = episode_request(recovered, sandbox, thinking, strict_form)
            return trimmed(chat_sample(request, f"agent/{task.family}/recovery", mistaken_turns(recovered)))
        except SlipMissed:  # the wrong name still matched: the plain episode
            pass
    return trimmed(chat_sample(episode_request(task, sandbox, thinking, strict_form), f"agent/{task.family}"))


def retrieval_sample(rng: random.Random, n_tokens: int, count) -> Sample:
    depth = rng.random()
    make = passkey if rng.random() < 0.5 else key_values
    needle = make(rng, n_tokens, depth, count)
    return trimmed(chat_sample(needle.request, make.__name__))


def copy_sample(rng: random.Random) -> Sample:
    return trimmed(chat_sample(copy_request(rng), "copy"))


def trimmed(sample: Sample) -> Sample:
    """The text up to the end of its last trained span (a rendering may go on with a generation prompt)."""
    return Sample(sample.text[:sample.spans[-1][1]], sample.spans, sample.kind)


class TokenCounter:
    """Token counts of text pieces, cached (filler sentences repeat)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.count = functools.lru_cache(maxsize=1 << 16)(self._count)

    def _count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def collate(samples: list[Sample], tokenizer: Tokenizer, kind: str, max_len: int | None = None,
            n_mtp: int = 1) -> Batch:
    """Samples -> one right-padded batch; a sample longer than max_len keeps its last max_len tokens. The prefix
    the rows share (and the MTP layers' `n_mtp` tokens after it) is marked to run once."""
    rows = [tokenize(s, tokenizer) for s in samples]
    if max_len is not None:
        rows = [(ids[-max_len:], trained[-max_len:]) for ids, trained in rows]
    return collate_rows(rows, tokenizer.token_to_id("<｜end▁of▁sentence｜>"), kind, n_mtp)


def collate_rows(rows: list[tuple[list[int], list[bool]]], pad: int, kind: str, n_mtp: int = 1) -> Batch:
    s = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), s), pad, dtype=torch.long)
    targets = torch.full((len(rows), s), IGNORE, dtype=torch.long)
    for i, (row, trained) in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        nxt = torch.tensor(row[1:])
        keep = torch.tensor(trained[1:], dtype=torch.bool)
        targets[i, :len(row) - 1] = torch.where(keep, nxt, IGNORE)
    untrained = int((targets != IGNORE).any(0).long().argmax()) if (targets != IGNORE).any() else s
    return Batch(ids, targets, kind, min(shared_prefix(ids, n_mtp), (untrained - n_mtp) // PREFIX_ALIGN * PREFIX_ALIGN))


class BatchStream:
    """Batches costing about `tokens_per_batch` tokens of forward: agent episodes (a fraction `agent_fraction` of
    them; their shared system prompt runs once, so a batch holds several times more of them), short exact-copy turns
    (a fraction `copy_fraction`), or retrieval samples of the length asked for. A fraction `invented` of the agent
    tasks' names are made up, a fraction `unfamiliar` of their requests hold made-up words, a fraction `strict`
    offer the tools in strict form, and a fraction `recovery` make a call wrong first and recover."""

    def __init__(self, tokenizer: Tokenizer, sandbox: Sandbox, seed: int = 0, tokens_per_batch: int = 4096,
                 agent_fraction: float = 0.5, copy_fraction: float = 0.0, invented: float = 0.0,
                 unfamiliar: float = 0.0, strict: float = 0.0, recovery: float = 0.0):
        if not (0 <= agent_fraction and 0 <= copy_fraction and agent_fraction + copy_fraction <= 1):
            raise ValueError(f"agent_fraction={agent_fraction} and copy_fraction={copy_fraction} must be >= 0 and "
                             f"sum to at most 1")
        self.tokenizer, self.sandbox = tokenizer, sandbox  # the caller owns (and closes) the sandbox
        self.rng, self.count = random.Random(seed), TokenCounter(tokenizer).count
        self.tokens_per_batch, self.agent_fraction, self.copy_fraction = tokens_per_batch, agent_fraction, copy_fraction
        self.invented, self.unfamiliar, self.strict, self.recovery = invented, unfamiliar, strict, recovery

    def next(self, length: int) -> Batch:
        rng = self.rng
        draw = rng.random()
        if draw >= self.agent_fraction and draw < self.agent_fraction + self.copy_fraction:
            return self._filled(lambda: copy_sample(rng), "copy")
        if draw < self.agent_fraction:
            pad = self.tokenizer.token_to_id("<｜end▁of▁sentence｜>")
            rows, batch = [tokenize(self._agent_sample(), self.tokenizer)], None
            while True:  # the batch stays within budget
                grown = collate_rows(rows, pad, "agent")
                if grown.cost > self.tokens_per_batch and batch is not None:
                    return batch
                batch = grown
                rows.append(tokenize(self._agent_sample(), self.tokenizer))
        n = max(1, self.tokens_per_batch // length)
        return collate([retrieval_sample(rng, length, self.count) for _ in range(n)], self.tokenizer, "retrieval")

    def _filled(self, make, kind: str) -> Batch:
        """Short samples until the padded batch would pass the budget."""
        pad = self.tokenizer.token_to_id("<｜end▁of▁sentence｜>")
        rows = [tokenize(make(), self.tokenizer)]
        while True:
            row = tokenize(make(), self.tokenizer)
            if max(len(r[0]) for r in rows + [row]) * (len(rows) + 1) > self.tokens_per_batch:
                return collate_rows(rows, pad, kind)
            rows.append(row)

    def _agent_sample(self) -> Sample:
        def draw() -> Sample:
            return agent_sample(self.rng, self.sandbox, invented=self.invented, unfamiliar=self.unfamiliar,
                                strict=self.strict, recovery=self.recovery)
        try:
            return draw()
        except SandboxError:  # a long run outlives a sandbox that broke: one fresh sandbox, one retry
            self.sandbox.close()
            self.sandbox = Sandbox.create("process")
            return draw()
