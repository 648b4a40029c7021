"""A request's outputs (all tokens so far, after each token) as what each one added: the new text and the new
tokens' logprobs. The running text only grows; a character split across tokens is held back until it is whole."""

from collections.abc import AsyncIterator

from dsv4.engine import RequestOutput, TokenLogprob


async def text_deltas(outputs: AsyncIterator[RequestOutput]
                      ) -> AsyncIterator[tuple[str, list[TokenLogprob], RequestOutput]]:
    """(new text, the new tokens' logprobs, the output) for each output."""
    text, seen = "", 0
    async for out in outputs:
        delta = ""
        if out.text.startswith(text) and (out.finished or not out.text.endswith("\ufffd")):
            delta, text = out.text[len(text):], out.text
        new = (out.logprobs or [])[seen:]
        seen += len(new)
        yield delta, new, out
