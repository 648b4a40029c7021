"""Recovery episodes: a task's plan with one call first made wrong, the way a small model's copies go wrong (a name
with a letter changed, dropped, doubled or two swapped, or a word of the request taken for the name), then the error
it gets, a look at the workspace, and the right call. The wrong call stays in the context but is not trained on
(`Call.mistaken`): the model learns what to do after an error, not to make one.

Held-out runs showed why: a slipped name (`boreas` -> `ioreas`) or a misread directory (`configured`) got an error,
and a model that had never seen an error went on to write noise until the step limit."""

import json
import random
import re
from dataclasses import replace

from .episodes import AgentTask, Call

# Families whose wrong call fails: a misnamed path is an error, a misnamed grep word matches nothing. A misnamed
# written file or a miscopied number does not fail, so compute and write_file have no recovery.
RECOVERABLE = ("read_value", "find_file", "count_lines", "grep_file")
LIST_PATHS = Call("That path does not exist. I will list the workspace to see its real names.", "bash",
                  {"command": "ls -R"})
LIST_LINES = Call("grep matched no file. I will list the lines the files hold.", "bash", {"command": "grep -r ."})
_NOT_NAMES = {"grep", "txt", "cfg", "log", "md"}  # words of a call that were not copied from the request
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def slip(rng: random.Random, word: str) -> str:
    """`word` with one copy slip: a letter changed, dropped or doubled, or two neighbours swapped."""
    while True:
        i, kind = rng.randrange(len(word)), rng.randrange(4)
        if kind == 0:
            out = word[:i] + rng.choice(_LETTERS) + word[i + 1:]
        elif kind == 1 and len(word) > 3:
            out = word[:i] + word[i + 1:]
        elif kind == 2:
            out = word[:i + 1] + word[i:]
        else:  # two neighbours swapped; the last letter has none after it, and the word comes back unchanged
            out = word[:i] + word[i + 1:i + 2] + word[i] + word[i + 2:]
        if out != word:
            return out


def _whole(word: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])")


def with_recovery(rng: random.Random, task: AgentTask, misread: float = 0.4) -> AgentTask | None:
    """`task` with one of its calls made first with a wrong name (a request word taken for it with probability
    `misread`, else a slip), then the listing that shows the real names, the right call and the rest of the plan;
    None where a wrong call would not fail (compute, write_file)."""
    if task.family not in RECOVERABLE:
        return None
    i = rng.randrange(len(task.calls))
    call = task.calls[i]
    args = json.dumps(call.args)
    copied = {w for w in re.findall(r"[A-Za-z]{3,}", args) if w not in _NOT_NAMES}
    names = sorted(w for w in copied if _whole(w).search(task.prompt))
    if not names:
        return None
    name = rng.choice(names)
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{4,}", task.prompt)} - {n.lower() for n in names})
    wrong = rng.choice(words) if words and rng.random() < misread else slip(rng, name)
    whole = _whole(name)
    mistaken = Call(whole.sub(wrong, call.reasoning), call.tool, json.loads(whole.sub(wrong, args)), mistaken=True)
    grep_word = call.tool == "bash" and call.args["command"].startswith("grep") and \
        call.args["command"].split()[2] == name
    listing = LIST_LINES if grep_word else LIST_PATHS
    expect = task.expect_in_results
    return replace(task, calls=[*task.calls[:i], mistaken, listing, *task.calls[i:]],
                   expect_in_results=[*expect[:i], "", name, *expect[i:]])
