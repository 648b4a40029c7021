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
                   help="checkpoint directory (default: the built-in random-weight `tiny` checkpoint, created once)")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--dialect", choices=("ga", "preview"), default="ga")
    p.set_defaults(func=cmd_chat)


def default_checkpoint() -> Path:
    """The built-in default model: the `tiny` preset (real layer kinds and tokenizer, random weights)."""
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
    import torch
    from tokenizers import Tokenizer

    from dsv4.encoding import EncodingError, StreamParser, encode_request, fold_events
    from dsv4.encoding.request import thinking_mode_of
    from dsv4.model import load_model

    request = load_request(args)
    try:
        prompt = encode_request(request, dialect=args.dialect)
    except EncodingError as e:
        print(f"dsv4 chat: {e}", file=sys.stderr)
        return 2
    path = args.model or default_checkpoint()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    eos = tokenizer.token_to_id("<｜end▁of▁sentence｜>")
    model = load_model(path, dtype=torch.float32)
    print(f"model {path} | prompt {len(ids)} tokens ({args.dialect} dialect) ends {prompt[-40:]!r}")
    mode = thinking_mode_of(request)
    parser, events = StreamParser(thinking_mode=mode, tools=request.get("tools")), []
    t0 = time.perf_counter()
    new = generate_greedy(model, ids, args.max_tokens, eos, lambda text: events.extend(show(parser.feed(text))),
                          tokenizer)
    elapsed = time.perf_counter() - t0
    events.extend(show(parser.finish()))
    message = fold_events(events, thinking_mode=mode)
    print(f"\n{len(new)} tokens in {elapsed:.2f} s ({len(new) / elapsed:.1f} tok/s, greedy, prefill included)")
    print(json.dumps({**message.to_openai(), "warnings": message.warnings}, ensure_ascii=False, indent=2))
    return 0


def generate_greedy(model, ids: list[int], max_tokens: int, eos: int, on_text, tokenizer) -> list[int]:
    """Prefill once, then decode step by step from the model's cache; text is streamed as it forms."""
    import torch

    cache = model.new_cache(batch_size=1, max_seq_len=len(ids) + max_tokens)
    with torch.inference_mode():
        logits = model(torch.tensor([ids]), cache=cache, start_pos=0)
        new: list[int] = []
        text = ""
        while len(new) < max_tokens:
            token = int(logits[0].argmax())
            new.append(token)
            decoded = tokenizer.decode(new, skip_special_tokens=False)
            if not decoded.endswith("\ufffd"):  # wait for the rest of a split UTF-8 character
                on_text(decoded[len(text):])
                text = decoded
            if token == eos:
                break
            logits = model(torch.tensor([[token]]), cache=cache, start_pos=len(ids) + len(new) - 1)
    return new


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
