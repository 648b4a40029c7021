"""`dsv4 agent`: run the tool-use agent on a task, tools in a sandbox, against a V4 endpoint or (without one) a
checkpoint served in-process (thin: `dsv4.agent`, `dsv4.sandbox` and `dsv4.server` do the work)."""

import argparse
import contextlib
import os
import sys
from pathlib import Path

NETWORK_HELP = "sandbox network rules: none, loopback, all (any public host:port, through the proxy), or host:port,..."


def _model_args(p) -> None:
    p.add_argument("--endpoint", default=None,
                   help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (default: serve --checkpoint "
                        "in-process)")
    p.add_argument("--model", default=None, help="the model name sent to the endpoint (default: what it lists)")
    p.add_argument("--api-key-env", default="DEEPSEEK_API_KEY", help="environment variable holding the API key")
    p.add_argument("--checkpoint", default=None,
                   help="without --endpoint: checkpoint directory or preset (default: the built-in trained checkpoint)")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=None, help="completion tokens per model call")
    p.add_argument("--reasoning-effort", default=None, help="none, low, high or max")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature, 0 = greedy (default: the endpoint's; the built-in model's is greedy)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed of every model call")
    p.add_argument("--strict-tools", action="store_true",
                   help="offer the tools as strict functions: a server that enforces them (dsv4 serve does) makes "
                        "every call match its tool's parameters")


def register(sub) -> None:
    t = sub.add_parser("agent-tasks", help="run Harbor-format tasks (Terminal-Bench layout) in local sandboxes")
    t.add_argument("tasks", nargs="+", type=Path, help="task directories (or directories of them)")
    t.add_argument("--agent", choices=("model", "oracle", "nop"), default="model",
                   help="the model agent, the tasks' reference solutions, or nothing (default: model)")
    t.add_argument("--sandbox", default="process", choices=("process", "container", "vm"))
    t.add_argument("--network", default="none", help=NETWORK_HELP)
    t.add_argument("--out", type=Path, default=Path("task-results"),
                   help="the job directory: Harbor's job files (config.json, result.json, a directory per trial with "
                        "its result, verifier output and trajectory) and dsv4's results.json")
    t.add_argument("--concurrency", type=int, default=1,
                   help="tasks run at once (each in its own sandbox; the server batches their requests); with --ray, "
                        "tasks submitted to the cluster at once where above 1 (default there: twice its CPUs)")
    t.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run each task on a node of a Ray cluster: auto (default: the cluster this machine is in), "
                        "HOST:PORT or ray://HOST:PORT; the model agent needs an --endpoint every node reaches "
                        "(needs pip install 'dsv4[cluster]')")
    _model_args(t)
    t.set_defaults(func=cmd_agent_tasks)

    p = sub.add_parser("agent", help="run the tool-use agent on a task (tools in a sandbox)")
    p.add_argument("task", nargs="?", default=None, help="what to do (not with --resume)")
    _model_args(p)
    p.add_argument("--sandbox", default="process", choices=("process", "container", "vm"))
    p.add_argument("--rootfs", type=Path, default=None, help="container image (directory, OCI layout or tarball)")
    p.add_argument("--network", default="none", help=NETWORK_HELP)
    p.add_argument("--mcp", action="append", default=[], metavar="NAME=SERVER",
                   help="an MCP server whose tools the agent gets: NAME=http(s)://.../mcp or NAME='command args' "
                        "(stdio); repeatable")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--upload", action="append", default=[], metavar="HOST_PATH[:PATH]",
                   help="copy a host file or directory into the sandbox before the run (a directory's contents land "
                        "at PATH; default PATH: the workspace, /workspace); repeatable")
    p.add_argument("--trajectory", type=Path, default=Path("trajectory.json"),
                   help="saved after every model reply and tool call")
    p.add_argument("--journal", type=Path, default=None,
                   help="journal every sandbox operation to this file, so that --resume can go on after a crash")
    p.add_argument("--resume", action="store_true",
                   help="go on with the run saved in --trajectory, in a sandbox rebuilt from --journal (no tool call "
                        "runs twice; --sandbox, --rootfs and --network are the journal's)")
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    import httpx

    from dsv4.agent import Agent, AgentConfig, ToolRegistry, sandbox_tools
    from dsv4.agent.mcp_bridge import McpTools
    from dsv4.sandbox import Sandbox, SandboxError

    try:
        servers = _mcp_servers(args.mcp)
        if (args.task is None) != args.resume:
            raise ValueError("give a task, or --resume (which reads the task from --trajectory)")
        if args.resume and args.journal is None:
            raise ValueError("--resume needs the --journal of the run's sandbox")
        if args.resume and args.upload:
            raise ValueError("--upload is for a new run (a resumed one has its files in the journal)")
        uploads = [_upload_spec(u) for u in args.upload]
    except ValueError as e:
        print(f"dsv4 agent: {e}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:
            client, context = _client(args, stack)
            config = AgentConfig(max_steps=args.max_steps, max_seconds=args.max_seconds, context_tokens=context,
                                 strict_tools=args.strict_tools)
            mcp = stack.enter_context(McpTools(servers)) if servers else None

            def tools_for(sb: Sandbox) -> ToolRegistry:
                return ToolRegistry(sandbox_tools(sb) + (mcp.tools() if mcp else []))
            if args.resume:
                agent = Agent(client, ToolRegistry([]), config, tools_for=tools_for)
                run = stack.enter_context(agent.resume(args.trajectory, journal=args.journal))
            else:
                sandbox = stack.enter_context(Sandbox.create(args.sandbox, rootfs=args.rootfs,
                                                             network_rules=args.network, journal=args.journal))
                for host_path, path in uploads:
                    sandbox.upload(host_path, path or sandbox.spec.workdir)
                agent = Agent(client, tools_for(sandbox), config, sandbox=sandbox, tools_for=tools_for)
                run = agent.start(args.task, save_to=args.trajectory)
        except (httpx.HTTPError, SandboxError, ConnectionError, OSError, ValueError) as e:
            print(f"dsv4 agent: {e}", file=sys.stderr)
            return 2
        print(f"agent: {client.model} at {client.base_url}, {run.agent.sandbox.spec.backend.type} sandbox, "
              f"trajectory -> {args.trajectory}" + (f" (resumed at step {len(run.trajectory.steps)})"
                                                     if args.resume else ""))
        t = run.finish(on_step=_show_step)
    ending = f" ({t.error})" if t.error else ""
    print(f"\nstatus: {t.status}{ending}, {len(t.steps)} steps, {t.tokens()} tokens")
    if t.answer is not None:
        print(t.answer)
    return 0 if t.status == "finished" else 1


def _upload_spec(spec: str) -> tuple[Path, str | None]:
    """HOST_PATH[:PATH] -> (an existing host path, the sandbox path or None for the workspace)."""
    host, _, path = spec.partition(":")
    if not Path(host).exists():
        raise ValueError(f"--upload {spec}: no such file or directory on this machine: {host}")
    if path and not path.startswith("/"):
        raise ValueError(f"--upload {spec}: the sandbox path must be absolute, got {path!r}")
    return Path(host), path or None


def _client(args: argparse.Namespace, stack: contextlib.ExitStack):
    """(the OpenAI client for --endpoint, or for the checkpoint served locally for the stack's lifetime, and the
    model's context length where the endpoint lists it)."""
    agent = _endpoint_agent(args, stack)
    return agent.client, agent.context_tokens


def _endpoint_agent(args: argparse.Namespace, stack: contextlib.ExitStack):
    """The model agent's maker for --endpoint, or for the checkpoint served locally for the stack's lifetime."""
    from dsv4.agent.endpoint_agent import EndpointAgent

    url = args.endpoint or stack.enter_context(local_server(args.checkpoint)) + "/v1"
    key = os.environ.get(args.api_key_env)
    model, context = listed_model(url, key, args.model)
    extra = {k: v for k, v in (("max_tokens", args.max_tokens), ("reasoning_effort", args.reasoning_effort),
                                ("temperature", args.temperature), ("seed", args.seed)) if v is not None}
    return EndpointAgent(url, model, key, extra, args.max_steps, context, args.strict_tools)


@contextlib.contextmanager
def local_server(checkpoint: str | None):
    """The checkpoint served on a free local port, its engine in a process of its own."""
    from dsv4.cli.chat_cmds import default_checkpoint
    from dsv4.engine import EngineConfig
    from dsv4.server import create_app
    from dsv4.server.backend import ProcessBackend
    from dsv4.server.background import serving

    path = str(checkpoint or default_checkpoint())
    # prefix caching on: each turn resends the conversation, which then starts where the last reply ended
    backend = ProcessBackend(path, EngineConfig(prefix_cache_size=8), Path(path).name)
    try:
        with serving(create_app(backend, default_max_tokens=512)) as url:
            yield url
    finally:
        backend.close()


def _mcp_servers(specs: list[str]) -> dict[str, str]:
    servers = {}
    for spec in specs:
        name, sep, server = spec.partition("=")
        if not sep or not name or not server:
            raise ValueError(f"--mcp {spec!r}: expected NAME=URL or NAME='command args'")
        servers[name] = server
    return servers


def listed_model(url: str, key: str | None, name: str | None = None) -> tuple[str, int | None]:
    """(the model to use: `name` or the first listed, its context length where the endpoint says it, as dsv4
    and vLLM do in `max_model_len`)."""
    import httpx

    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        data = httpx.get(f"{url.rstrip('/')}/models", headers=headers, timeout=30).raise_for_status().json()
    except httpx.HTTPError:
        if name is None:
            raise
        return name, None  # an endpoint without /models: the model as given, its context unknown
    cards = {m["id"]: m for m in data.get("data", []) if isinstance(m, dict) and "id" in m}
    if name is None:
        if not cards:
            raise ValueError(f"{url}/models lists no model; pass --model")
        name = next(iter(cards))
    context = cards.get(name, {}).get("max_model_len")
    return name, context if isinstance(context, int) else None


def _show_step(t) -> None:
    step, reply = t.steps[-1], next(m for m in reversed(t.messages) if m.role == "assistant")
    print(f"\n[step {step.index}] {step.finish_reason}, {step.usage.get('completion_tokens', '?')} tokens")
    for text in (reply.reasoning_content, reply.content):
        if text:
            print("  " + _short(text))
    for r in step.tool_results:
        print(f"  -> {r.name} {'ok' if r.ok else 'FAILED'}: {_short(r.output)}")


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + " ..."


def cmd_agent_tasks(args: argparse.Namespace) -> int:
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import asdict
    from importlib.metadata import version

    from rich.console import Console

    from dsv4.agent.harbor import TaskError, load_task, run_task
    from dsv4.agent.harbor_job import HarborJob
    from dsv4.agent.ray_tasks import ClusterError
    from dsv4.agent.task_report import TaskProgress, counts, summary

    dirs = [d for t in args.tasks for d in ([t] if (t / "instruction.md").is_file() else sorted(t.iterdir()))
            if d.is_dir()]
    try:
        tasks = [load_task(d) for d in dirs]
        if args.ray is not None:
            _check_ray_args(args)
    except (TaskError, ValueError, ClusterError) as e:
        print(f"dsv4 agent-tasks: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log or a pipe: no wrapping at 80 columns
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        agent, model = args.agent, None
        if agent == "model":
            agent = _endpoint_agent(args, stack)  # a value: it travels to the nodes under --ray
            model = agent.model
        job = HarborJob(args.out, "dsv4" if model else args.agent, model, tasks, version=version("dsv4"),
                        environment={"type": None, "kwargs": {"dsv4_sandbox": args.sandbox, "network": args.network}},
                        n_concurrent=max(1, args.concurrency))
        trajectories = args.out / "trajectories"
        done = {}  # task index -> its result

        def one(task):
            return run_task(task, agent, backend=args.sandbox, network=args.network, trajectory_dir=trajectories)

        trajectories.mkdir(exist_ok=True)
        try:
            with ThreadPoolExecutor(max(1, args.concurrency)) as pool, TaskProgress(len(tasks), console) as progress:
                finished = _as_finished(pool, one, tasks) if args.ray is None else _on_ray(tasks, agent, args)
                for i, r in finished:  # as they finish (the files keep task order), rewritten after each
                    done[i] = r
                    progress.done(r)
                    job.add(tasks[i], r, trajectories / f"{tasks[i].name}.json")
                    results = [done[k] for k in sorted(done)]
                    (args.out / "results.json").write_text(json.dumps([asdict(x) for x in results], indent=1))
        except ClusterError as e:
            print(f"dsv4 agent-tasks: {e}", file=sys.stderr)
            return 2
        results = [done[k] for k in sorted(done)]
        job.finish()
        with contextlib.suppress(OSError):
            trajectories.rmdir()  # each went to its trial's agent/ directory
    for table in summary(results, time.monotonic() - start):
        console.print(table)
    ran = [r for r in results if r.status != "skipped"]
    print(f"{sum(r.status == 'passed' for r in ran)}/{len(ran)} passed ({counts(results)}) "
          f"-> {args.out / 'results.json'}, Harbor job files in {args.out}")
    return 0


def _as_finished(pool, fn, items: list):
    """(index, fn(item)) of each item as it finishes in `pool` (the progress bar moves when any task ends)."""
    from concurrent.futures import as_completed

    futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
    for future in as_completed(futures):
        yield futures[future], future.result()


def _check_ray_args(args: argparse.Namespace) -> None:
    """Before anything starts: an address that reads as one, the endpoint the nodes use, Ray installed."""
    from dsv4.agent.ray_tasks import import_ray

    if args.ray != "auto" and ":" not in args.ray:  # e.g. a task directory taken for the address
        raise ValueError(f"--ray {args.ray!r}: expected auto, HOST:PORT or ray://HOST:PORT (put --ray after the "
                         "task directories, or write --ray=ADDRESS)")
    if args.agent == "model" and args.endpoint is None:
        raise ValueError("--ray with the model agent needs --endpoint, a URL every node of the cluster reaches")
    import_ray()


def _on_ray(tasks: list, agent, args: argparse.Namespace):
    """(index, result) of each task as it finishes on the cluster at --ray."""
    from dsv4.agent.ray_tasks import run_on_ray

    print(f"agent-tasks: {len(tasks)} tasks on the Ray cluster at {args.ray}", flush=True)
    in_flight = args.concurrency if args.concurrency > 1 else None
    return run_on_ray(tasks, agent, address=args.ray, backend=args.sandbox, network=args.network,
                      trajectory_dir=args.out / "trajectories", in_flight=in_flight)
