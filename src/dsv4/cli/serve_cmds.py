"""`dsv4 serve`: the OpenAI-compatible HTTP server over an in-process engine (thin: `dsv4.server` does the work)."""

import argparse
import os
import sqlite3
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a V4 checkpoint over an OpenAI-compatible HTTP API")
    p.add_argument("--model", default=None,
                   help="checkpoint directory or preset name (default: the built-in trained checkpoint)")
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send and /v1/models lists (default: the checkpoint's directory name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", default=None,
                     help="require `Authorization: Bearer KEY` (or `x-api-key: KEY`) on every path but /health and "
                          "/metrics (visible to other users in `ps`: prefer --api-key-file or $DSV4_API_KEY)")
    key.add_argument("--api-key-file", type=Path, default=None,
                     help="read the API key from this file (its first line)")
    # defaults (None here) live with the server: importing it would load torch for every dsv4 command
    p.add_argument("--max-request-bytes", type=int, default=None,
                   help="refuse larger request bodies with 413, before reading them; bodies past their first MiB "
                        "held at once: 4x this at most, 503 beyond (default: 16 MiB)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections at most; over it, the one that has waited longest for its request head "
                        "is closed (default: 1024, lowered to what `ulimit -n` allows)")
    p.add_argument("--header-timeout", type=float, default=None,
                   help="seconds a connection may take to send its request head (default: 10)")
    p.add_argument("--keep-alive-timeout", type=float, default=None,
                   help="seconds an idle keep-alive connection is kept (default: 5)")
    p.add_argument("--dialect", choices=("ga", "preview"), default="ga")
    p.add_argument("--default-max-tokens", type=int, default=32768,
                   help="completion limit of requests that set none (lowered to what fits in the context)")
    p.add_argument("--max-num-seqs", type=int, default=16, help="requests decoding at once at most")
    p.add_argument("--max-num-batched-tokens", type=int, default=512,
                   help="token budget of one engine step (prefill chunks + one per decoding request)")
    p.add_argument("--max-model-len", type=int, default=None, help="prompt + completion tokens of one request")
    p.add_argument("--kv-cache-gib", type=float, default=None,
                   help="KV cache memory in GiB (default: 512 blocks of 128 tokens)")
    p.add_argument("--compile", action="store_true",
                   help="decode steps as one torch.compile'd graph (each new batch/context bucket compiles once)")
    p.add_argument("--decode-threads", type=int, default=None,
                   help="intra-op threads for decode steps (default: as for prefill; 1 suits small models)")
    p.add_argument("--prefix-cache-size", type=int, default=8,
                   help="slot copies kept for prompt-prefix sharing between requests (0: off)")
    p.add_argument("--speculative", action="store_true", help="MTP speculative decoding for greedy requests")
    agents = p.add_argument_group("agent clients")
    agents.add_argument("--salvage-tool-calls", action="store_true",
                        help="return a tool call the model wrote as text in its answer (a declared tool, arguments "
                             "that validate, on lines of their own outside code) as a call, with x_dsv4_warnings; "
                             "a request's x_dsv4_salvage (true or false) overrides this")
    agents.add_argument("--reasoning-store", type=Path, default=None, metavar="PATH",
                        help="also keep the reasoning of the tool-call turns served in this SQLite file, so it is "
                             "put back after a restart (default: in memory only)")
    agents.add_argument("--no-reasoning-retention", action="store_true",
                        help="do not put recorded reasoning back into replayed tool-call turns that lack it "
                             "(default: put back, with the header x-dsv4-reasoning-restored)")
    up = p.add_argument_group("upstream", "generation delegated to OpenAI-compatible raw-completions servers "
                               "(vLLM, SGLang, llama.cpp, another dsv4 serve); --model then names the tokenizer "
                               "(a checkpoint directory or tokenizer.json; default: V4's) and the engine flags "
                               "do not apply")
    up.add_argument("--upstream", action="append", default=None, metavar="URL",
                    help="an upstream's base URL (http://host:8000); repeat for several: requests go to the least "
                         "busy, a conversation stays on the upstream that holds its prefix while it can")
    up.add_argument("--upstream-model", default=None,
                    help="the model name the upstreams serve (default: the first their /v1/models lists)")
    up.add_argument("--upstream-key-file", type=Path, default=None,
                    help="the upstreams' API key, from this file's first line (default: $DSV4_UPSTREAM_KEY)")
    up.add_argument("--upstream-timeout", type=float, default=600.0,
                    help="seconds to wait for an upstream's next bytes, its first token included (default: 600)")
    up.add_argument("--upstream-prompt", choices=("text", "ids"), default="text",
                    help="send prompts as text (default) or as token ids of the local tokenizer")
    p.add_argument("--engine-in-process", action="store_true",
                   help="step the engine in a thread of the server's process (default: a process of its own, so "
                        "the engine and the event loop do not share a GIL)")
    p.set_defaults(func=cmd_serve)


def agent_options(args: argparse.Namespace) -> dict:
    """`create_app`'s salvage and reasoning-retention options from the flags."""
    from dsv4.server.reasoning_store import ReasoningStore

    if args.reasoning_store is not None and args.no_reasoning_retention:
        raise SystemExit("dsv4 serve: --reasoning-store and --no-reasoning-retention contradict each other")
    options = {"salvage_tool_calls": args.salvage_tool_calls, "retain_reasoning": not args.no_reasoning_retention}
    if args.reasoning_store is not None:
        try:
            options["reasoning_store"] = ReasoningStore(args.reasoning_store)
        except sqlite3.Error as e:
            raise SystemExit(f"dsv4 serve: --reasoning-store {args.reasoning_store}: {e}") from None
    return options


def build_app(args: argparse.Namespace):
    """The app `dsv4 serve` runs (separate so it can be built without binding a port)."""
    from dsv4.cli.chat_cmds import default_checkpoint
    from dsv4.engine import Engine, EngineConfig
    from dsv4.server import EngineBackend, create_app
    from dsv4.server.backend import ProcessBackend

    key = api_key_of(args)  # before the model loads: a bad key file fails at once
    if args.max_request_bytes is not None and args.max_request_bytes < 0:
        raise SystemExit(f"dsv4 serve: --max-request-bytes must be at least 0; got {args.max_request_bytes}")
    if args.upstream:
        return create_app(upstream_backend(args), dialect=args.dialect, default_max_tokens=args.default_max_tokens,
                          api_key=key, **limit_of(args), **agent_options(args))
    model = args.model or default_checkpoint()
    extra = {"max_model_len": args.max_model_len} if args.max_model_len else {}
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                          kv_cache_gib=args.kv_cache_gib,
                          decode_threads=args.decode_threads, prefix_cache_size=args.prefix_cache_size,
                          speculative=args.speculative, compile=args.compile, grammar_warmup=True, **extra)
    name = args.served_model_name or Path(str(model)).name
    backend = EngineBackend(Engine.from_pretrained(model, config), name) if args.engine_in_process \
        else ProcessBackend(str(model), config, name)
    return create_app(backend, dialect=args.dialect, default_max_tokens=args.default_max_tokens,
                      api_key=key, **limit_of(args), **agent_options(args))


def limit_of(args: argparse.Namespace) -> dict:
    return {"max_request_bytes": args.max_request_bytes} if args.max_request_bytes is not None else {}


def upstream_backend(args: argparse.Namespace):
    """`--upstream ...`: the backend over the upstream servers (their /v1/models is read now: one must answer)."""
    from dsv4.server.upstream import UpstreamBackend, UpstreamConfig, upstream_tokenizer

    key = key_file(args.upstream_key_file, "--upstream-key-file") if args.upstream_key_file is not None \
        else os.environ.get("DSV4_UPSTREAM_KEY") or None
    try:
        config = UpstreamConfig(args.upstream, model=args.upstream_model, api_key=key,
                                timeout_s=args.upstream_timeout, max_model_len=args.max_model_len,
                                prompt_as=args.upstream_prompt)
        return UpstreamBackend(config, upstream_tokenizer(args.model), args.served_model_name)
    except ValueError as e:
        raise SystemExit(f"dsv4 serve --upstream: {e}") from e


def api_key_of(args: argparse.Namespace) -> str | None:
    """--api-key, else the first line of --api-key-file, else $DSV4_API_KEY, else None (open)."""
    if args.api_key is not None:
        print("dsv4 serve: --api-key shows the key to every user of this machine (ps); prefer --api-key-file or "
              "$DSV4_API_KEY", file=sys.stderr)
        return args.api_key
    if args.api_key_file is not None:
        return key_file(args.api_key_file, "--api-key-file")
    return os.environ.get("DSV4_API_KEY") or None


def key_file(path: Path, flag: str) -> str:
    """The key on the first line of `path` (SystemExit naming `flag` when it cannot be read or is empty)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SystemExit(f"dsv4 serve: {flag} {path}: {e.strerror}") from e
    key = lines[0].strip() if lines else ""
    if not key:
        raise SystemExit(f"dsv4 serve: {flag} {path}: the file's first line is empty")
    return key


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dsv4.server.connections import ConnectionLimits, uvicorn_config

    if args.engine_in_process:
        # Engine steps then run in a worker thread beside the event loop, and both need the GIL: with Python's
        # default 5 ms switch interval the loop's short per-token work (parsing, SSE) stalls a step for up to 5 ms
        # at a time. 16 concurrent chats on the tiny preset: 199 tok/s at 5 ms, 236 at 0.2 ms.
        sys.setswitchinterval(0.0002)
    given = {"max_connections": args.max_connections, "head_timeout": args.header_timeout,
             "keep_alive_timeout": args.keep_alive_timeout}
    limits = ConnectionLimits(**{k: v for k, v in given.items() if v is not None})
    app = build_app(args)
    uvicorn.Server(uvicorn_config(app, limits, host=args.host, port=args.port, log_level="info")).run()
    return 0
