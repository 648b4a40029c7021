"""A request's stream as the server consumes it: the backend's deltas (new tokens, new text, their logprobs), each
handed on with the running totals that usage and the finish need (`OutputAccumulator`: token count, finish and
stop reasons). Nothing is rebuilt or re-diffed per token; the text is joined only if someone reads it.

`deltas_of` is for a backend whose source gives whole outputs instead (an upstream server's text so far): it turns
them into deltas. The running text only grows; a character split across tokens is held back until it is whole."""

from collections.abc import AsyncIterator

from dsv4.engine import OutputAccumulator, RequestDelta, RequestOutput


async def with_totals(deltas: AsyncIterator[RequestDelta], prompt_ids: list[int]
                      ) -> AsyncIterator[tuple[RequestDelta, OutputAccumulator]]:
    """(delta, the totals with it added) for each delta."""
    total: OutputAccumulator | None = None
    async for delta in deltas:
        if total is None:
            total = OutputAccumulator(delta.request_id, prompt_ids, delta.logprobs is not None)
        yield delta, total.add(delta)


async def deltas_of(outputs: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestDelta]:
    """Whole outputs (all tokens so far, after each token) -> what each one added. Text that does not extend what
    was handed out (a final text cut or re-decoded differently) adds nothing."""
    text, n_ids, n_logprobs = "", 0, 0
    async for out in outputs:
        delta = ""
        if out.text.startswith(text) and (out.finished or not out.text.endswith("\ufffd")):
            delta, text = out.text[len(text):], out.text
        logprobs = out.logprobs[n_logprobs:] if out.logprobs is not None else None
        n_logprobs += len(logprobs or [])
        yield RequestDelta(out.request_id, out.token_ids[n_ids:], delta, logprobs, out.finish_reason,
                           out.stop_reason)
        n_ids = max(n_ids, len(out.token_ids))
