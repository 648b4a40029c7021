"""`AsyncEngine`: per-request async streaming over one `Engine`.

One background task drives `Engine.step` in a worker thread while any request is open and hands each request's
deltas to that request's queue; a consumer that stops iterating, or whose task is cancelled (an HTTP client
that disconnects), cancels its request: at once when no step is running, else right after that step. The
cancellation is queued for the driver before anything is awaited, so it holds under a cancellation that re-raises
at every await (anyio cancel scopes, as in Starlette).
"""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from .engine import Engine, StepFailed
from .output import RequestDelta, RequestOutput
from .sampling_params import SamplingParams


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()  # Engine is not thread-safe: steps, adds and aborts take turns
        self._queues: dict[int, asyncio.Queue] = {}  # RequestDelta, or the exception a step raised
        self._closing: list[int] = []  # requests to cancel before the next step
        self._loop: asyncio.Task | None = None

    async def stream(self, prompt: str | list[int], params: SamplingParams | None = None
                     ) -> AsyncIterator[RequestDelta]:
        """Yields the request's delta (its new tokens, text, logprobs) after each step that gave it tokens; the
        last one is finished. A step that ends it raises `StepFailed`."""
        async with contextlib.aclosing(self._deltas(await self._add(prompt, params))) as deltas:
            async for delta in deltas:  # (closed with this generator: leaving early cancels the request at once)
                yield delta

    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None) -> RequestOutput:
        request_id, out = await self._add(prompt, params, accumulate=True)
        async with contextlib.aclosing(self._deltas(request_id)) as deltas:
            async for delta in deltas:
                out.add(delta)
        return out.output()

    async def _add(self, prompt, params, accumulate: bool = False):
        """Adds the request in a worker thread -> its id (and an empty `OutputAccumulator` for it)."""
        def add():
            request_id = self.engine.add_request(prompt, params)
            return (request_id, self.engine.accumulator(request_id)) if accumulate else request_id

        adding = asyncio.ensure_future(asyncio.to_thread(self._locked, add))
        try:
            return await asyncio.shield(adding)
        except asyncio.CancelledError:  # the request may still be added: cancel it then
            adding.add_done_callback(lambda f: f.cancelled() or f.exception() or self._close_later(
                f.result()[0] if accumulate else f.result()))
            raise

    async def _deltas(self, request_id: int) -> AsyncIterator[RequestDelta]:
        queue = self._queues[request_id] = asyncio.Queue()
        self._ensure_driver()
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
            self._close_later(request_id)
            if request_id in self._closing:  # a step is running; unless this task is being cancelled, wait for
                await asyncio.to_thread(self._locked, self._close_pending)  # it (the caller may stop the loop next)

    def _ensure_driver(self):
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._drive())

    def _close_now(self, request_id: int) -> bool:
        """Cancels the request if no step holds the engine; False if one does."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._close(request_id)
        finally:
            self._lock.release()
        return True

    def _close_later(self, request_id: int):
        """Cancels the request now, or queues it for the driver to cancel before its next step."""
        if not self._close_now(request_id):
            self._closing.append(request_id)
            self._ensure_driver()

    def _close_pending(self):
        while self._closing:
            self._close(self._closing.pop())

    def _step(self) -> list[RequestDelta]:
        self._close_pending()
        return self.engine.step() if self._queues else []

    async def _drive(self):
        while self._queues or self._closing:
            try:
                deltas = await asyncio.to_thread(self._locked, self._step)
            except Exception as e:  # the requests the step ended raise it; the others run on
                ended = e.request_ids if isinstance(e, StepFailed) else list(self._queues)  # else: engine broken
                for rid in ended:
                    if rid in self._queues:
                        self._queues[rid].put_nowait(e)
                if not isinstance(e, StepFailed):
                    return
                continue
            for delta in deltas:
                if delta.request_id in self._queues:
                    self._queues[delta.request_id].put_nowait(delta)

    def _locked(self, fn, *args):
        with self._lock:
            return fn(*args)

    def _close(self, request_id: int):
        self.engine.abort(request_id)  # no-op when it finished (it has left the engine)
