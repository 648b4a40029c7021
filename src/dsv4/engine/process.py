"""`EngineProcess`: the engine in a process of its own, fed and drained over a pipe.

A server's event loop (parsing, SSE, JSON per token) and the engine's steps are both Python: in one process they
take turns on the GIL and each stalls the other. Here the child process only steps the engine; the parent streams.
The pipe carries the engine's deltas as they are (new token ids, new text, new logprobs per request per step), and
the parent hands them on as they came: a long request costs the same per token at 1M tokens as at 1K.

The child exits when told to, or when the parent's end of the pipe closes (the parent died). A child that dies
fails every open stream with the reason. It is started with "spawn" (a fresh interpreter, no forked torch state):
a script that creates an `EngineProcess` must do so under `if __name__ == "__main__":`, as with any spawned
multiprocessing child (the `dsv4` command does).
"""

import asyncio
import dataclasses
import itertools
import multiprocessing as mp
import threading
from collections.abc import AsyncIterator

from .config import EngineConfig
from .output import RequestDelta
from .sampling_params import SamplingParams
from .stats import EngineStats


class EngineProcess:
    def __init__(self, path_or_preset: str, config: EngineConfig | None = None, seed: int = 0,
                 threads: int | None = None, start_timeout_s: float = 600.0):
        """`threads`: torch's intra-op threads in the engine process (None: torch's default there)."""
        ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks
        self._conn, child = ctx.Pipe()
        args = (child, str(path_or_preset), config or EngineConfig(), seed, threads)
        self.process = ctx.Process(target=_child, args=args, name="dsv4-engine", daemon=True)
        self.process.start()
        child.close()
        if not self._conn.poll(start_timeout_s):
            self.process.kill()
            raise RuntimeError(f"the engine process did not start within {start_timeout_s:g} s")
        kind, info = self._conn.recv()
        if kind != "ready":
            self.process.join(10)
            raise RuntimeError(f"the engine process failed to start: {info}")
        self.info: dict = info  # vocab_size, eos_token_id, max_model_len, num_blocks, block_size
        self.stats = EngineStats(blocks_total=info["num_blocks"])
        self._send_lock = threading.Lock()
        self._streams: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._ids = itertools.count()
        self.error: str | None = None
        self._reader = threading.Thread(target=self._read, name="dsv4-engine-reader", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.error is None and self.process.is_alive()

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestDelta]:
        """The request's delta after each step that gave it tokens (its `request_id` is this process's id for
        it); the last one is finished. Leaving early aborts it."""
        if self.error is not None:
            raise RuntimeError(self.error)
        rid, queue = next(self._ids), asyncio.Queue()
        self._streams[rid] = (asyncio.get_running_loop(), queue)
        self._send(("add", rid, list(prompt_ids), params))
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            self._streams.pop(rid, None)
            if not finished and self.error is None:
                self._send(("abort", rid))

    def close(self):
        """Stops the engine process (idempotent)."""
        if self._conn.closed:
            return
        if self.process.is_alive():
            try:
                self._send(("close",))
            except (OSError, ValueError):
                pass
            self.process.join(30)
            if self.process.is_alive():
                self.process.kill()
        self._conn.close()

    def _send(self, message):
        with self._send_lock:
            self._conn.send(message)

    def _read(self):
        try:
            while True:
                kind, *rest = self._conn.recv()
                if kind == "step":
                    deltas, self.stats = rest
                    for d in deltas:
                        self._deliver(d.request_id, d)
                elif kind == "failed":
                    rid, message = rest
                    self._deliver(rid, RuntimeError(message))
        except (EOFError, OSError) as e:
            self.error = f"the engine process ended (exit code {self.process.exitcode}): {type(e).__name__}"
            for rid in list(self._streams):
                self._deliver(rid, RuntimeError(self.error))

    def _deliver(self, rid: int, item):
        target = self._streams.get(rid)
        if target is not None:
            loop, queue = target
            loop.call_soon_threadsafe(queue.put_nowait, item)


def _child(conn, path_or_preset: str, config: EngineConfig, seed: int, threads: int | None):
    import torch

    from .engine import Engine, StepFailed

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        engine = Engine.from_pretrained(path_or_preset, config, seed=seed)
    except Exception as e:
        conn.send(("failed-to-start", f"{type(e).__name__}: {e}"))
        return
    c = engine.config
    conn.send(("ready", {"vocab_size": engine.model.config.vocab_size, "eos_token_id": engine.eos_token_id,
                         "max_model_len": min(c.max_model_len, c.num_blocks * c.block_size),
                         "num_blocks": c.num_blocks, "block_size": c.block_size}))
    ours: dict[int, int] = {}  # the parent's request id -> the engine's
    try:
        while True:
            while conn.poll(0 if engine.has_unfinished() else None):
                command = conn.recv()
                if command[0] == "close":
                    return
                if command[0] == "add":
                    _, rid, prompt_ids, params = command
                    try:
                        ours[rid] = engine.add_request(prompt_ids, params)
                    except Exception as e:
                        conn.send(("failed", rid, f"{type(e).__name__}: {e}"))
                elif command[0] == "abort" and command[1] in ours:
                    engine.abort(ours.pop(command[1]))
                    if not engine.has_unfinished():  # no step follows to bring the parent the idle stats
                        conn.send(("step", [], engine.stats()))
            if not engine.has_unfinished():
                conn.send(("step", [], engine.stats()))  # idle now: the parent's stats say so
                continue
            theirs = {eid: rid for rid, eid in ours.items()}
            try:
                deltas = engine.step()
            except Exception as e:  # the requests the step ended fail; the others run on
                ended = e.request_ids if isinstance(e, StepFailed) else list(theirs)  # else: the engine is broken
                for eid in ended:
                    if eid in theirs:
                        conn.send(("failed", theirs[eid], f"{type(e).__name__}: {e}"))
                        ours.pop(theirs[eid], None)
                        engine.abort(eid)
                continue
            for d in deltas:
                if d.finished:
                    ours.pop(theirs.get(d.request_id), None)
            conn.send(("step", [dataclasses.replace(d, request_id=theirs[d.request_id]) for d in deltas
                                if d.request_id in theirs], engine.stats()))
    except (EOFError, OSError):  # the parent is gone
        return
