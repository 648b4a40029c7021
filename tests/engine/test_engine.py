"""The engine on the tiny checkpoint: greedy output equals a hand-written greedy loop over the model, batching
and chunking change nothing, stop conditions end where they should, blocks all come back."""

import pytest
import torch

from dsv4.engine import CacheFull, Engine, EngineConfig, SamplingParams, StepFailed

from .conftest import Collector

GREEDY = SamplingParams(temperature=0, max_tokens=12)
PROMPTS = [[0, 4713, 3221, 14, 10, 77], [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 11, 12, 13, 14],
           [0, 42], list(range(5, 40))]


def _engine(model, tokenizer, **config) -> Engine:
    return Engine(model, tokenizer, EngineConfig(**{"num_blocks": 8, **config}))


def greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    """The plain loop: prefill the prompt in one call, then one token at a time."""
    cache = model.new_cache(1, len(prompt) + n)
    logits = model(torch.tensor([prompt]), cache=cache, start_pos=0)
    out = [int(logits[0].argmax())]
    for pos in range(len(prompt), len(prompt) + n - 1):
        logits = model(torch.tensor([[out[-1]]]), cache=cache, start_pos=pos)
        out.append(int(logits[0].argmax()))
    return out


@pytest.fixture(scope="module")
def reference(tiny_model):
    return [greedy_reference(tiny_model, p, GREEDY.max_tokens) for p in PROMPTS]


def test_greedy_generate_equals_the_manual_loop(tiny_model, tokenizer, reference):
    # a small token budget: prompts are prefilled in chunks of up to 5 tokens next to the decodes
    engine = _engine(tiny_model, tokenizer, max_num_batched_tokens=5)
    outs = engine.generate([PROMPTS[1]], GREEDY)
    assert outs[0].token_ids == reference[1]
    assert outs[0].finish_reason == "length"
    assert outs[0].text == tokenizer.decode(reference[1], skip_special_tokens=False)


def test_batched_equals_one_at_a_time(tiny_model, tokenizer, reference):
    engine = _engine(tiny_model, tokenizer, max_num_batched_tokens=16)
    batched = engine.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in batched] == reference
    assert engine.blocks.num_used == 0 and not engine.memory.slots


def test_requests_in_step_run_as_one_batch(tiny_model, tokenizer, reference):
    engine = _engine(tiny_model, tokenizer)
    outs = engine.generate([PROMPTS[0]] * 3, GREEDY)
    assert [o.token_ids for o in outs] == [reference[0]] * 3
    assert engine.runner.num_forward_calls == GREEDY.max_tokens  # one call per step for all three


def test_decodes_at_different_positions_run_as_one_batch(tiny_model, tokenizer, reference):
    engine = _engine(tiny_model, tokenizer, max_num_batched_tokens=64)  # all four prompts prefill in step 1
    outs = engine.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in outs] == reference
    # step 1: one prefill call per prompt length; then one call per step for all four decodes
    assert engine.runner.num_forward_calls == len(PROMPTS) + GREEDY.max_tokens - 1


def test_preemption_under_a_small_cache_keeps_the_tokens(tiny_model, tokenizer, reference):
    # 4 blocks of 128 tokens: the long request crosses into a second block while all 4 are taken
    long = list(range(5, 125))
    engine = _engine(tiny_model, tokenizer, num_blocks=4, max_num_batched_tokens=64)
    outs = engine.generate([long] + PROMPTS[:3], GREEDY)
    assert engine.scheduler.num_preemptions > 0
    assert [o.token_ids for o in outs] == [greedy_reference(tiny_model, long, 12)] + reference[:3]
    assert engine.blocks.num_used == 0 and not engine.memory.slots


def test_text_prompt_is_tokenized_without_extra_tokens(tiny_model, tokenizer):
    engine = _engine(tiny_model, tokenizer)
    text = "<｜begin▁of▁sentence｜>Hello, world"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert ids[0] == 0
    a, b = engine.generate([text, ids], SamplingParams(temperature=0, max_tokens=4))
    assert a.prompt_token_ids == ids and a.token_ids == b.token_ids


def test_max_tokens_stop_ids_eos_and_stop_strings(tiny_model, tokenizer, reference):
    engine = _engine(tiny_model, tokenizer)
    ref, prompt = reference[0], PROMPTS[0]
    short = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=3))[0]
    assert short.token_ids == ref[:3] and short.finish_reason == "length"

    k = 5
    stop_id = ref[k]
    first = ref.index(stop_id)
    out = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_id]))[0]
    assert out.token_ids == ref[: first + 1] and out.finish_reason == "stop" and out.stop_reason == stop_id
    assert out.text == tokenizer.decode(ref[:first], skip_special_tokens=False)

    eos_engine = Engine(tiny_model, tokenizer, EngineConfig(), eos_token_id=stop_id)
    eos = eos_engine.generate([prompt], GREEDY)[0]
    assert eos.token_ids == ref[: first + 1] and eos.stop_reason is None and short.stop_reason is None
    ignored = eos_engine.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    assert ignored.token_ids == ref

    full = tokenizer.decode(ref, skip_special_tokens=False)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    ends = min(i for i in range(1, len(ref) + 1) if stop in tokenizer.decode(ref[:i], skip_special_tokens=False))
    out = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=12, stop=[stop, "\x00never"]))[0]
    assert out.text == full[: full.index(stop)] and out.finish_reason == "stop" and out.stop_reason == stop
    assert out.token_ids == ref[:ends]
    assert engine.blocks.num_used == 0


def test_cancellation_frees_blocks_at_once(tiny_model, tokenizer):
    engine = _engine(tiny_model, tokenizer, max_num_seqs=1)
    running = engine.add_request(PROMPTS[3], GREEDY)
    waiting = engine.add_request(PROMPTS[1], GREEDY)
    engine.step()
    engine.step()
    assert engine.blocks.num_used == len(engine.blocks.table(running)) > 0
    assert engine.abort(waiting) and engine.abort(running)
    assert engine.blocks.num_used == 0 and not engine.memory.slots and not engine.has_unfinished()
    assert not engine.abort(running)  # it has left the engine
    assert not engine.seqs and engine.stats().finished["abort"] == 2


def test_a_step_that_raises_ends_its_requests_and_frees_their_cache(tiny_model, tokenizer, reference, monkeypatch):
    engine = _engine(tiny_model, tokenizer, max_num_seqs=1)
    steps = Collector(engine)
    first = engine.add_request(PROMPTS[2], GREEDY)
    steps.step()
    second = engine.add_request(PROMPTS[0], GREEDY)  # waits: one request at a time
    calls = []

    def fail_once(*args):
        calls.append(args)
        raise RuntimeError("device lost")

    with monkeypatch.context() as m:
        m.setattr(engine.runner, "run", fail_once)
        with pytest.raises(StepFailed, match="device lost") as failed:
            engine.step()
    assert calls and failed.value.request_ids == [first] and str(first) in str(failed.value)  # one error, naming it
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert first not in engine.seqs and engine.stats().finished["error"] == 1  # it left the engine
    assert steps.output(first).token_ids == reference[2][:1]  # what it had was handed out before
    assert engine.blocks.num_used == 0 and not engine.memory.slots  # nothing half-written stays in use
    assert steps.until_done(second)[0].token_ids == reference[0]  # the other runs on, from a clean slot


def test_stream_yields_each_token_and_frees_when_closed(tiny_model, tokenizer, reference):
    engine = _engine(tiny_model, tokenizer)
    deltas = list(engine.stream(PROMPTS[2], GREEDY))
    assert [len(d.token_ids) for d in deltas] == [1] * 12  # one new token each, never the ones before
    assert sum((d.token_ids for d in deltas), []) == reference[2] and deltas[-1].finished
    assert not any(d.finished for d in deltas[:-1]) and not engine.seqs  # it left the engine with its last delta
    stream = engine.stream(PROMPTS[2], GREEDY)
    next(stream)
    assert engine.blocks.num_used > 0
    stream.close()  # a client that goes away cancels its request
    assert engine.blocks.num_used == 0


def test_sampling_seed_top_k_and_logprobs(tiny_model, tokenizer, reference):
    engine = _engine(tiny_model, tokenizer)
    # 50 candidates: a draw over all 129K of a random model's flat logits moves with the ~1e-6 by which BLAS can
    # compute two rows of one GEMM differently (the BF16 rounding of KV RoPE dims made that visible)
    p = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, seed=7, max_tokens=8)
    a, b = engine.generate([PROMPTS[0], PROMPTS[0]], p)
    assert a.token_ids == b.token_ids  # same seed, same draws, even when batched
    top1 = engine.generate([PROMPTS[0]], SamplingParams(temperature=0.7, top_k=1, seed=3, max_tokens=12))[0]
    assert top1.token_ids == reference[0]
    out = engine.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=2, logprobs=3))[0]
    lp = tiny_model(torch.tensor([PROMPTS[0]]))[0].log_softmax(-1)
    assert out.logprobs[0].token_id == reference[0][0]
    # the packed cache stores KV RoPE dims in BF16, as the model simulates them: float32 roundoff apart
    assert out.logprobs[0].logprob == pytest.approx(lp[reference[0][0]].item(), abs=1e-5)
    assert list(out.logprobs[0].top) == lp.topk(3).indices.tolist()


def test_request_errors_name_the_field(tiny_model, tokenizer):
    engine = _engine(tiny_model, tokenizer, num_blocks=1, max_model_len=200)
    with pytest.raises(CacheFull, match="needs 2 more blocks"):
        engine.add_request(list(range(126)), SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="block_size must be a multiple of 128; got 64"):
        EngineConfig(block_size=64)
    with pytest.raises(ValueError, match="max_model_len=200"):
        engine.add_request([0], SamplingParams(max_tokens=200))
    with pytest.raises(ValueError, match=r"prompt token ids must be in \[0, 129280\); 1 are not: 129280 at 1$"):
        engine.add_request([0, 129280])
    with pytest.raises(ValueError, match=r"3000 are not: 129280 at 1, .*, 129284 at 5, \.\.\.$"):
        engine.add_request([0] + list(range(129280, 132280)))  # a long wrong prompt: named, not dumped
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="prompts must be a list of prompts"):
        engine.generate([0, 1, 2])
    with pytest.raises(ValueError, match="prompts must be a list of prompts"):
        engine.generate("hello")


def test_from_pretrained_dir_and_preset(tiny_dir):
    engine = Engine.from_pretrained(tiny_dir)
    assert engine.tokenizer is not None and engine.eos_token_id == 1
    out = engine.generate([[0, 1, 2, 3]], SamplingParams(temperature=0, max_tokens=3))[0]
    assert len(out.token_ids) == 3
    with pytest.raises(ValueError, match="neither a directory nor one of"):
        Engine.from_pretrained("no-such-model")


def test_cache_allocation_equals_the_plan(tiny_model, tokenizer):
    from dsv4.cache.plan import KVPlan

    plan = KVPlan(tiny_model.config)
    engine = _engine(tiny_model, tokenizer, num_blocks=6, max_num_seqs=2)
    cache = engine.runner.cache
    assert cache.nbytes() == 6 * 128 * plan.bytes_per_token() + 2 * plan.fixed_bytes()
    request = engine.add_request(list(range(1, 257)), SamplingParams(temperature=0, max_tokens=2))
    engine.step()  # prefill 256 tokens: 2 blocks and a slot
    held = len(engine.blocks.table(request)) * cache.block_bytes() + cache.slot_bytes()
    assert held == plan.request_bytes(256)


def test_kv_cache_gib_sizes_the_cache_to_fit(tiny_model, tokenizer):
    from dsv4.cache.plan import KVPlan

    plan = KVPlan(tiny_model.config)
    block, slots = 128 * plan.bytes_per_token(), 3 * plan.fixed_bytes()
    gib = (slots + 10.5 * block) / 2**30  # room for 10 whole blocks and half of one more
    engine = _engine(tiny_model, tokenizer, kv_cache_gib=gib, max_num_seqs=3)
    assert engine.config.num_blocks == 10 == engine.blocks.num_blocks
    assert engine.runner.cache.nbytes() <= gib * 2**30 < engine.runner.cache.nbytes() + block
    spec = _engine(tiny_model, tokenizer, kv_cache_gib=gib, max_num_seqs=3, speculative=True)  # + MTP windows
    cache = spec.runner.cache
    assert spec.config.num_blocks < 10 and cache.nbytes() <= gib * 2**30 < cache.nbytes() + cache.block_bytes()
    with pytest.raises(ValueError, match="holds no KV block: 3 request slots"):
        _engine(tiny_model, tokenizer, kv_cache_gib=slots / 2**30, max_num_seqs=3)
    with pytest.raises(ValueError, match="kv_cache_gib must be positive"):
        EngineConfig(kv_cache_gib=0)


def test_decode_threads_apply_to_decode_only_steps(tiny_model, tokenizer, reference, monkeypatch):
    engine = _engine(tiny_model, tokenizer, decode_threads=1)
    seen, run = [], engine.runner.run

    def record(chunks):
        seen.append((max(c.n for c in chunks), torch.get_num_threads()))
        return run(chunks)

    monkeypatch.setattr(engine.runner, "run", record)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = engine.generate([PROMPTS[1]], GREEDY)[0]
        assert torch.get_num_threads() == 2  # restored after every step
    finally:
        torch.set_num_threads(before)
    assert out.token_ids == reference[1]
    assert seen[0] == (len(PROMPTS[1]), 2) and all(t == 1 for n, t in seen[1:]) and len(seen) == GREEDY.max_tokens
    with pytest.raises(ValueError, match="decode_threads must be positive"):
        EngineConfig(decode_threads=0)
