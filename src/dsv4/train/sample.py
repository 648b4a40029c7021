"""`Sample`: one training text rendered by dsv4.encoding, with the character spans the loss is taken on (what
the model itself writes: the assistant turns), and its tokenization into ids and a loss mask."""

from collections.abc import Collection
from dataclasses import dataclass

from tokenizers import Tokenizer

from dsv4.encoding import encode_request
from dsv4.encoding.tokens import EOS


@dataclass(frozen=True)
class Sample:
    text: str
    spans: tuple[tuple[int, int], ...]  # [start, end) character ranges trained on
    kind: str  # the generator that made it ("agent/read_value", "passkey", ...)


def chat_sample(request: dict, kind: str, untrained: Collection[int] = ()) -> Sample:
    """A chat-completions request whose messages end with the assistant's last turn -> the whole conversation
    rendered as the server renders it, each assistant turn (reasoning, content, tool calls, EOS) a loss span.
    Each turn's prompt (the conversation before it) must be a prefix of the whole rendering, as it is whenever the
    encoder keeps earlier turns as they were generated (V4 keeps reasoning across tool turns). The assistant turns at
    the message indices `untrained` stay in the context without a span."""
    messages = request["messages"]
    full = encode_request(request)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i in untrained:
            continue
        prompt = encode_request({**request, "messages": messages[:i]})
        if not full.startswith(prompt):
            raise ValueError(f"{kind}: the prompt of assistant turn {i} is not a prefix of the conversation")
        end = full.find(EOS, len(prompt))
        if end < 0:
            raise ValueError(f"{kind}: assistant turn {i} has no {EOS} after it")
        spans.append((len(prompt), end + len(EOS)))
    return Sample(full, tuple(spans), kind)


def tokenize(sample: Sample, tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
    """(ids, trained): trained[i] says whether token i is a target of the loss (it starts inside a span)."""
    enc = tokenizer.encode(sample.text, add_special_tokens=False)
    trained, spans, j = [], sample.spans, 0
    for start, _ in enc.offsets:
        while j < len(spans) and start >= spans[j][1]:
            j += 1
        trained.append(j < len(spans) and spans[j][0] <= start)
    return enc.ids, trained
