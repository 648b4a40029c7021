"""Constrained decoding's cost per token, as a ratio to unconstrained decoding in the same run (tiny preset, random
weights, the real 129K-token V4 tokenizer), printed, asserting nothing.

For each batch size, the same prompts decode (a) free, (b) under a JSON schema (`response_format` json_schema:
long string arrays, so most tokens are free text inside JSON strings, the costliest masks) and (c) as a forced
tool call in thinking mode (free reasoning, then the DSML call). Cost per token = wall time / generated tokens;
the grammar's masks are computed on a worker thread during the forward, so the ratio shows what is left on the
critical path. The llguidance tokenizer (built once per engine, seconds) is built before timing.

Run: `.venv/bin/python benchmarks/constrained.py [--tokens 96] [--batches 1,8] [--repeats 3]`.
"""

import argparse
import os
import time

import torch

from dsv4.encoding import encode_messages
from dsv4.encoding.grammar import RAW_VALUE_OPEN, response_grammar, tool_call_grammar
from dsv4.encoding.tokens import DSML, EOS, PARAM_CLOSE, THINK_END
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.engine.constraint import Constraint
from dsv4.engine.sampling_params import Grammar

SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "notes": {"type": "array", "items": {
    "type": "string"}}, "score": {"type": "number"}}, "required": ["title", "notes", "score"]}
TOOLS = [{"name": "write_file", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "content": {"type": "string"}, "mode": {"type": "integer"}},
    "required": ["path", "content"]}}]


def per_token(engine: Engine, prompt: str, params: list[SamplingParams]) -> tuple[float, int]:
    """(seconds per generated token, tokens) for the batch run to completion."""
    t = time.perf_counter()
    outs = engine.generate([prompt] * len(params), params)
    n = sum(len(o.token_ids) for o in outs)
    return (time.perf_counter() - t) / n, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    engine = Engine.from_pretrained("tiny", EngineConfig(num_blocks=128, max_num_seqs=16))
    single = {t: engine.tokenizer.token_to_id(t) for t in (THINK_END, EOS, DSML)}
    t = time.perf_counter()
    Constraint(Grammar(response_grammar({"type": "json_object"}, thinking=False, single_tokens=single)),
               engine._grammar_tokens, 8)
    print(f"llguidance tokenizer of the {engine.model.config.vocab_size}-token vocabulary built in "
          f"{time.perf_counter() - t:.1f} s (once per engine)")
    chat = encode_messages([{"role": "user", "content": "Answer in JSON."}], thinking_mode="chat")
    think = encode_messages([{"role": "system", "content": "", "tools": [{"type": "function", "function": t}
                                                                       for t in TOOLS]},
                             {"role": "user", "content": "Write hello.py"}], tool_choice="required")
    json_grammar = Grammar(response_grammar({"type": "json_schema", "json_schema": {"schema": SCHEMA}},
                                            thinking=False, single_tokens=single))
    call_grammar = Grammar(tool_call_grammar(TOOLS, None, thinking=True, single_tokens=single), THINK_END,
                           args.tokens // 2, ((RAW_VALUE_OPEN, PARAM_CLOSE),))
    per_token(engine, chat, [SamplingParams(max_tokens=8, ignore_eos=True)])  # warm-up
    print(f"{'batch':>5} {'free ms/tok':>12} {'json ms/tok':>12} {'ratio':>6} {'call ms/tok':>12} {'ratio':>6}")
    for b in (int(x) for x in args.batches.split(",")):
        def run(prompt, grammar, ignore_eos=False, b=b):
            return per_token(engine, prompt, [SamplingParams(temperature=1.0, seed=i, max_tokens=args.tokens,
                                                             grammar=grammar, ignore_eos=ignore_eos)
                                              for i in range(b)])[0]
        # interleaved repeats, best of each: the machine is shared, and a run's neighbours move its timing
        best = [min(x) for x in zip(*[(run(chat, None, True), run(chat, json_grammar), run(think, None, True),
                                       run(think, call_grammar)) for _ in range(args.repeats)], strict=True)]
        free, json_cost, free_think, call_cost = best
        print(f"{b:>5} {free * 1e3:>12.2f} {json_cost * 1e3:>12.2f} {json_cost / free:>6.2f} "
              f"{call_cost * 1e3:>12.2f} {call_cost / free_think:>6.2f}")

if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
