"""`dsv4 chat`: one chat turn end to end — render with dsv4.encoding, generate with dsv4.model, parse back."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_MESSAGE = "What's the weather in Paris and Rome over the next two days?"


def register(sub) -> None:
    p = sub.add_parser("chat", help="render a chat, generate the reply on a V4 checkpoint, parse it (streamed)")
    p.add_argument("message", nargs="?", default=None, help="a user message (default: --request or an example)")
    p.add_argument("--request", type=Path, help="an OpenAI chat-completions request body (JSON file)")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint directory (default: the built-in trained checkpoint)")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--dialect", choices=("ga", "preview"), default="ga")
    p.add_argument("--kv-cache-gib", type=float, default=None,
                   help="KV cache memory in GiB (default: 512 blocks of 128 tokens)")
    p.add_argument("--compile", action="store_true",
                   help="decode steps as one torch.compile'd graph (each new batch/context bucket compiles once)")
    p.add_argument("--decode-threads", type=int, default=None,
                   help="intra-op threads for decode steps (default: as for prefill; 1 suits small models)")
    p.set_defaults(func=cmd_chat)


def default_checkpoint() -> Path:
    """The default model: the built-in trained checkpoint that ships in the package (dsv4.checkpoints); in a tree
    without it, the `tiny` preset (real layer kinds and tokenizer, random weights), created once."""
    from dsv4.checkpoints import builtin

    if (path := builtin()) is not None:
        return path
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsv4" / "checkpoints" / "tiny-seed0"
    if not (root / "config.json").is_file():
        from dsv4.cli.model_cmds import init_checkpoint

        init_checkpoint(argparse.Namespace(preset="tiny", seed=0, out=root))
    return root


def load_request(args: argparse.Namespace) -> dict:
    if args.request:
        return json.loads(args.request.read_text(encoding="utf-8"))
    example = Path(__file__).parents[3] / "examples" / "weather_request.json"
    if args.message is None and example.is_file():
        return json.loads(example.read_text(encoding="utf-8"))
    return {"messages": [{"role": "user", "content": args.message or DEFAULT_MESSAGE}]}


def cmd_chat(args: argparse.Namespace) -> int:
    from dsv4.encoding import EncodingError, encode_request
    from dsv4.engine import Engine, EngineConfig

    request = load_request(args)
    try:
        prompt = encode_request(request, dialect=args.dialect)
    except EncodingError as e:
        print(f"dsv4 chat: {e}", file=sys.stderr)
        return 2
    path = args.model or default_checkpoint()
    engine = Engine.from_pretrained(path, EngineConfig(kv_cache_gib=args.kv_cache_gib,
                                                       decode_threads=args.decode_threads,
                                                       compile=args.compile))
    print(f"model {path} | prompt {len(engine.encode(prompt))} tokens ({args.dialect} dialect)"
          f" ends {prompt[-40:]!r}")
    t0 = time.perf_counter()
    message, out = run_chat(engine, request, prompt, args.max_tokens, on_events=show)
    elapsed = time.perf_counter() - t0
    print(f"\n{len(out.token_ids)} tokens in {elapsed:.2f} s ({len(out.token_ids) / elapsed:.1f} tok/s, greedy,"
          f" prefill included; finish: {out.finish_reason})")
    print(json.dumps({**message.to_openai(), "warnings": message.warnings}, ensure_ascii=False, indent=2))
    return 0


def run_chat(engine, request: dict, prompt: str, max_tokens: int, on_events=lambda events: events):
    """Generate greedily on `engine`, feeding the text to a stream parser as it forms: (message, RequestOutput)."""
    from dsv4.encoding import FORCED_TOOL_CALLS, StreamParser, fold_events
    from dsv4.encoding.request import thinking_mode_of
    from dsv4.engine import OutputAccumulator, SamplingParams

    mode = thinking_mode_of(request)
    parser = StreamParser(thinking_mode=mode, tools=request.get("tools"))
    events = on_events(parser.feed(FORCED_TOOL_CALLS)) if prompt.endswith(FORCED_TOOL_CALLS) else []
    out = None
    for delta in engine.stream(prompt, SamplingParams(temperature=0, max_tokens=max_tokens)):
        out = (out or OutputAccumulator(delta.request_id, [])).add(delta)
        events += on_events(parser.feed(delta.text))
    events += on_events(parser.finish())
    return fold_events(events, thinking_mode=mode), out.output()


def show(events: list) -> list:
    """Print stream events as they arrive: reasoning dim, content plain, tool calls on their own lines."""
    for ev in events:
        kind = type(ev).__name__
        if kind == "ReasoningDelta":
            print(f"\033[2m{ev.text}\033[0m" if sys.stdout.isatty() else ev.text, end="", flush=True)
        elif kind == "ContentDelta":
            print(ev.text, end="", flush=True)
        elif kind == "ToolCallStart":
            print(f"\n[tool call {ev.index}: {ev.name}] ", end="", flush=True)
        elif kind == "ArgumentsDelta":
            print(ev.text, end="", flush=True)
        elif kind == "ParseWarning":
            print(f"\n[parser: {ev.message}]", end="", flush=True)
    return events
