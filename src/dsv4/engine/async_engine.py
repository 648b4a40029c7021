"""`AsyncEngine`: per-request async streaming over one `Engine`.

One background task drives `Engine.step` in a worker thread while any request is open and hands each request's
new output to that request's queue; a consumer that stops iterating cancels its request (blocks freed at once).
"""

import asyncio
import threading
from collections.abc import AsyncIterator

from .engine import Engine
from .sampling_params import SamplingParams
from .sequence import RequestOutput


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()  # Engine is not thread-safe: steps, adds and aborts take turns
        self._queues: dict[int, asyncio.Queue] = {}  # RequestOutput, or the exception a step raised
        self._loop: asyncio.Task | None = None

    async def stream(self, prompt: str | list[int], params: SamplingParams | None = None
                     ) -> AsyncIterator[RequestOutput]:
        """Yields the request's output (all tokens so far) after each new token; the last one is finished."""
        request_id = await asyncio.to_thread(self._locked, self.engine.add_request, prompt, params)
        queue = self._queues[request_id] = asyncio.Queue()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._drive())
        finished = False
        try:
            while not finished:
                out = await queue.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
        finally:
            self._queues.pop(request_id, None)
            await asyncio.to_thread(self._locked, self._close, request_id)

    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None) -> RequestOutput:
        outs = [out async for out in self.stream(prompt, params)]
        return outs[-1]

    async def _drive(self):
        while self._queues:
            try:
                outs = await asyncio.to_thread(self._locked, self.engine.step)
            except Exception as e:  # the requests the step ended raise it; the others run on
                failed = [rid for rid in self._queues if self._failed(rid)] or list(self._queues)
                for rid in failed:  # (none ended: the engine itself is broken, so every stream raises)
                    self._queues[rid].put_nowait(e)
                if len(failed) == len(self._queues):
                    return
                continue
            for out in outs:
                if out.request_id in self._queues:
                    self._queues[out.request_id].put_nowait(out)

    def _failed(self, request_id: int) -> bool:
        seq = self.engine.seqs.get(request_id)
        return seq is not None and seq.finish_reason == "error"

    def _locked(self, fn, *args):
        with self._lock:
            return fn(*args)

    def _close(self, request_id: int):
        self.engine.abort(request_id)  # no-op when it finished
        self.engine.seqs.pop(request_id, None)
