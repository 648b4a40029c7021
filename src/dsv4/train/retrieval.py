"""Long-context retrieval samples: a passkey, or several key-value needles, hidden at a chosen depth in filler
text of a chosen length in tokens, then a question about it (a non-thinking chat turn).

    The pass key is 71432. Remember it. 71432 is the pass key.      (passkey)
    The value of amber is 5821.                                    (key-value needles, 2-4 of them)

The answer repeats the question's words before the value ("The pass key is 71432."), so producing the value is
a copy from wherever the needle sits: at 4K tokens that is far beyond the window layers' reach (layers x 128).
"""

import random
from collections.abc import Callable
from dataclasses import dataclass

from .words import DIRS, KEYS, NOUNS, SUBJECTS, pick

ADJECTIVES = "quiet bright heavy narrow ancient gentle hollow silent golden rapid distant humble".split()
VERBS = "rests near|leans on|drifts past|waits by|hides under|glows above|turns toward|sleeps beside".split("|")
PASSKEY_QUESTION = "What is the pass key?"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Needle:
    request: dict  # the chat request, its last message the assistant's answer
    value: str  # what the answer must contain
    depth: float  # where the (asked) needle sits, 0 = start of the filler, 1 = its end


def filler_sentence(rng: random.Random) -> str:
    a, b = rng.sample(NOUNS, 2)
    return f"The {rng.choice(ADJECTIVES)} {a} {rng.choice(VERBS)} the {b}."


def passkey(rng: random.Random, n_tokens: int, depth: float, count: Callable[[str], int], digits: int = 5) -> Needle:
    key = str(rng.randint(10 ** (digits - 1), 10**digits - 1))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    return _build(rng, n_tokens, [(depth, needle)], PASSKEY_QUESTION, f"The pass key is {key}.", key, depth, count)


def key_values(rng: random.Random, n_tokens: int, depth: float, count: Callable[[str], int],
               held_out: bool = False) -> Needle:
    k = rng.randint(2, 4)
    names = pick(rng, SUBJECTS, held_out, k)
    values = [str(rng.randint(100, 99999)) for _ in names]
    asked = rng.randrange(k)
    depths = [depth if i == asked else rng.random() for i in range(k)]
    needles = [(d, f"The value of {n} is {v}.") for d, n, v in zip(depths, names, values, strict=True)]
    return _build(rng, n_tokens, needles, f"What is the value of {names[asked]}?",
                  f"The value of {names[asked]} is {values[asked]}.", values[asked], depth, count)


def _build(rng, n_tokens: int, needles: list[tuple[float, str]], question: str, answer: str, value: str,
           depth: float, count: Callable[[str], int]) -> Needle:
    """Filler sentences up to about n_tokens (counted by `count` on the rendered prompt's pieces), the needles at
    their depths, the question at the end."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1]; got {depth}")
    budget = n_tokens - count(question) - count(answer) - sum(count(" " + t) for _, t in needles) - 12  # template
    sentences, used = [], 0
    while True:
        s = filler_sentence(rng)
        cost = count(" " + s)
        if used + cost > budget:
            break
        sentences.append(s)
        used += cost
    for d, text in sorted(needles, reverse=True):  # deepest first: earlier insertions keep their places
        sentences.insert(round(d * len(sentences)), text)
    content = " ".join(sentences) + "\n\n" + question
    request = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}],
               "thinking": {"type": "disabled"}}
    return Needle(request, value, depth)


COPY_PROMPTS = ["Repeat exactly: {t}", "Say this back to me word for word: {t}", "Copy the following text: {t}",
                "Echo this: {t}"]


def copy_request(rng: random.Random) -> dict:
    """A short exact-copy turn: names, paths, key: value pairs and numbers drawn from the agent tasks' training
    pools, to be repeated verbatim. Every answer token is a copy, so the general copying that the agent tasks need
    (a path from the request into a tool call, a value from a tool result into the answer) gets a dense signal
    instead of a few tokens per episode; without it a small model learns the formats and writes likely names. Made-up
    words (never a pool's) make the copy one of letters, which is what an unseen name needs."""
    items = []
    for _ in range(rng.randint(3, 16)):
        kind = rng.randrange(5)
        if kind == 0:
            items.append(pick(rng, NOUNS, False)[0])
        elif kind == 1:
            ext = rng.choice(["txt", "cfg", "md", "log"])
            items.append(f"{pick(rng, DIRS, False)[0]}/{pick(rng, NOUNS, False)[0]}.{ext}")
        elif kind == 2:
            items.append(f"{pick(rng, KEYS, False)[0]}: {rng.randint(0, 99999)}")
        elif kind == 3:
            items.append(f"{pick(rng, SUBJECTS, False)[0]} {rng.randint(10, 99999)}")
        else:  # a made-up word: copying letters, not a pool of known names
            items.append("".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 9))))
    text = rng.choice([" ", ", ", "; "]).join(items)
    return {"messages": [{"role": "user", "content": rng.choice(COPY_PROMPTS).format(t=text)},
                         {"role": "assistant", "content": text}], "thinking": {"type": "disabled"}}
