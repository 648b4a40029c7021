"""`dsv4 train` (the built-in V4 model, or its window-only control, on the synthetic data) and `dsv4 eval passkey` /
`dsv4 eval agent` (thin: the data, tasks and scoring are `dsv4.train`; serving is the engine, server and agent)."""

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train", help="train the small built-in V4 model on synthetic agent and retrieval data")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory (resumed if it holds a run)")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=float, help="time budget of the run")
    length.add_argument("--steps", type=int, help="optimizer steps of the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--tokens-per-batch", type=int, default=3072)
    p.add_argument("--max-len", type=int, default=4096, help="longest retrieval sample of the curriculum")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--save-minutes", type=float, default=10.0, help="checkpoint interval")
    p.add_argument("--window-only", action="store_true", help="the control: every layer window-only")
    p.add_argument("--strict-fraction", type=float, default=0.0, metavar="F",
                   help="of agent episodes, those offering the tools in strict form (as `dsv4 agent --strict-tools`)")
    p.add_argument("--recovery-fraction", type=float, default=0.0, metavar="F",
                   help="of agent episodes, those that make a call wrong first (a slipped name), get its error, list "
                        "the workspace and make it right (the wrong call is not trained on)")
    p.set_defaults(func=cmd_train)
    register_eval(sub)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from dsv4.train.builtin import BUILTIN, window_only
    from dsv4.train.schedule import Schedule
    from dsv4.train.trainer import TrainConfig, stdout_log, train

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        cfg = TrainConfig(out=args.out, model=window_only(BUILTIN) if args.window_only else BUILTIN,
                          minutes=args.minutes, steps=args.steps, seed=args.seed,
                          tokens_per_batch=args.tokens_per_batch, save_minutes=args.save_minutes,
                          strict_tools=args.strict_fraction, recovery=args.recovery_fraction,
                          schedule=Schedule(lr=args.lr, max_len=args.max_len))
    except ValueError as e:
        raise SystemExit(f"dsv4 train: {e}") from e
    train(cfg, log=stdout_log)
    return 0


def register_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: passkey retrieval grid, held-out agent tasks")
    evals = p.add_subparsers(dest="eval", required=True, metavar="EVAL")
    k = evals.add_parser("passkey", help="passkey exact-match by context length x depth (through the engine)")
    k.add_argument("--lengths", default="1024,4096", help="comma-separated prompt lengths in tokens")
    k.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="comma-separated depths in [0, 1]")
    k.add_argument("--samples", type=int, default=4, help="prompts per cell")
    _checkpoint_arg(k)
    k.set_defaults(func=cmd_eval_passkey)
    a = evals.add_parser("agent", help="held-out agent tasks through the server, agent loop and a sandbox")
    a.add_argument("--tasks", type=int, default=12)
    a.add_argument("--max-steps", type=int, default=6)
    a.add_argument("--seen", action="store_true",
                   help="tasks from the training pools and phrasings (fresh values) instead of held-out ones")
    a.add_argument("--sandbox", default="process", choices=("process", "container", "vm"))
    a.add_argument("--strict-tools", action="store_true",
                   help="the tools as strict functions, which the server enforces (valid DSML by construction)")
    a.add_argument("--trajectories", type=Path, default=None, metavar="DIR",
                   help="save each task's run (messages, reasoning, tool results) to DIR/NN-FAMILY.json")
    _checkpoint_arg(a)
    a.set_defaults(func=cmd_eval_agent)


def _checkpoint_arg(p) -> None:
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint directory (default: the built-in model of dsv4 chat)")
    p.add_argument("--seed", type=int, default=None, help="draws other cases than the default ones")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def _progress(done: int, total: int, what: str) -> None:
    width = 30
    bar = "#" * (width * done // total) + "." * (width - width * done // total)
    print(f"\r{what} [{bar}] {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _checkpoint(args) -> Path:
    from dsv4.cli.chat_cmds import default_checkpoint

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return args.checkpoint or default_checkpoint()


def cmd_eval_passkey(args: argparse.Namespace) -> int:
    from dsv4.engine import Engine, EngineConfig, SamplingParams
    from dsv4.train.evals import passkey_cases, passkey_correct, passkey_digits, passkey_grid

    try:
        lengths = [int(x) for x in args.lengths.split(",")]
        depths = [float(x) for x in args.depths.split(",")]
        if min(lengths) < 128 or not all(0 <= d <= 1 for d in depths) or args.samples < 1:
            raise ValueError("lengths must be >= 128, depths in [0, 1], samples >= 1")
    except ValueError as e:
        raise SystemExit(f"dsv4 eval passkey: --lengths/--depths/--samples: {e}") from e
    path = _checkpoint(args)
    per_cell = args.samples * len(depths)
    config = EngineConfig(max_num_seqs=per_cell, max_num_batched_tokens=2048,
                          num_blocks=per_cell * (max(lengths) // 128 + 2))
    engine = Engine.from_pretrained(path, config)
    if engine.tokenizer is None:
        raise SystemExit(f"dsv4 eval passkey: {path} has no tokenizer.json")
    count = lambda text: len(engine.tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731
    cases = passkey_cases(count, lengths, depths, args.samples, **({"seed": args.seed} if args.seed else {}))
    print(f"passkey: {path}, {len(cases)} prompts ({args.samples} per cell)", flush=True)
    params = SamplingParams(temperature=0, max_tokens=16)
    correct, digits = [], []
    for i in range(0, len(cases), per_cell):  # one length at a time, its depths batched
        outs = engine.generate([c.prompt for c in cases[i:i + per_cell]], params)
        for o, c in zip(outs, cases[i:i + per_cell], strict=True):
            correct.append(passkey_correct(o.text, c.key))
            digits.append(passkey_digits(o.text, c.key))
        _progress(len(correct), len(cases), "passkey")
    print("\n".join(passkey_grid(cases, correct, digits)))
    return 0


def cmd_eval_agent(args: argparse.Namespace) -> int:
    import contextlib

    from dsv4.agent import Agent, AgentConfig, OpenAIClient, ToolRegistry, sandbox_tools
    from dsv4.cli.agent_cmds import listed_model, local_server
    from dsv4.sandbox import Sandbox, SandboxFileError
    from dsv4.train.episodes import prepare
    from dsv4.train.evals import held_out_tasks, reasoning_retained, score_run

    if args.tasks < 1 or args.max_steps < 1:
        raise SystemExit("dsv4 eval agent: --tasks and --max-steps must be positive")
    tasks = held_out_tasks(args.tasks, held_out=not args.seen, **({"seed": args.seed} if args.seed else {}))
    path = _checkpoint(args)
    results, turns, retained = [], 0, 0
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(local_server(str(path))) + "/v1"
        model, _ = listed_model(url, None)
        client = OpenAIClient(url, model, extra={"temperature": 0, "max_tokens": 256})
        print(f"agent eval: {path}, {len(tasks)} {'seen-kind' if args.seen else 'held-out'} tasks, at most "
              f"{args.max_steps} steps each", flush=True)
        if args.trajectories is not None:
            args.trajectories.mkdir(parents=True, exist_ok=True)
        for i, task in enumerate(tasks):
            with Sandbox.create(args.sandbox) as sb:
                prepare(sb, task)
                # no salvage of calls written as text: the model's own DSML is what is measured
                config = AgentConfig(max_steps=args.max_steps, salvage_tool_calls=False,
                                     strict_tools=args.strict_tools)
                registry = ToolRegistry(sandbox_tools(sb))
                saved = args.trajectories / f"{i:02d}-{task.family}.json" if args.trajectories else None
                t = Agent(client, registry, config).run(task.prompt, save_to=saved)
                n, kept = reasoning_retained([m.wire() for m in t.messages], registry.schemas())
                turns, retained = turns + n, retained + kept

                def read(p, sb=sb):
                    try:
                        return sb.read_file(p).decode("utf-8", errors="replace")
                    except SandboxFileError:
                        return None

                r = score_run(task, t.status, t.messages, t.steps, read)
            results.append(r)
            print(f"\r{task.family:<12} {'solved' if r.solved else 'FAILED':<7} {r.status:<16} steps {r.steps} "
                  f"calls {r.valid_calls}/{r.tool_calls} valid | {task.prompt[:60]!r} -> {(r.answer or '')[:60]!r}",
                  flush=True)
            _progress(len(results), len(tasks), "agent")
    calls = sum(r.tool_calls for r in results)
    valid = sum(r.valid_calls for r in results)
    print(f"reasoning retained: {retained} of {turns} tool-call turns' reasoning in the next request's prompt")
    print(f"valid DSML: {100 * valid / calls if calls else 0:.1f}% of {calls} tool calls; "
          f"mean steps {sum(r.steps for r in results) / len(results):.1f}")
    families = dict.fromkeys(t.family for t in tasks)
    print("by family: " + ", ".join(
        f"{f} {sum(r.solved for t, r in zip(tasks, results, strict=True) if t.family == f)}/"
        f"{sum(t.family == f for t in tasks)}" for f in families))
    solved = sum(r.solved for r in results)
    print(f"agent success: {100 * solved / len(results):.1f}% ({solved}/{len(results)})")
    return 0
