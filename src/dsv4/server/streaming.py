"""A request's stream as the server consumes it: the backend's deltas (new tokens, new text, their logprobs), each
handed on with the running totals that usage and the finish need (`OutputAccumulator`: token count, finish and
stop reasons). Nothing is rebuilt or re-diffed per token; the text is joined only if someone reads it."""

from collections.abc import AsyncIterator

from dsv4.engine import OutputAccumulator, RequestDelta


async def with_totals(deltas: AsyncIterator[RequestDelta], prompt_ids: list[int]
                      ) -> AsyncIterator[tuple[RequestDelta, OutputAccumulator]]:
    """(delta, the totals with it added) for each delta."""
    total: OutputAccumulator | None = None
    async for delta in deltas:
        if total is None:
            total = OutputAccumulator(delta.request_id, prompt_ids, delta.logprobs is not None)
        yield delta, total.add(delta)
