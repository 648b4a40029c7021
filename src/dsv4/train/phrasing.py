"""How an agent task is asked: a family's request templates, wrapped in an opener and a closer, each pool split
into training and held-out parts.

A small model that saw four phrasings of a request learns those four sentences, not where in a sentence the path
or the key sits; with many phrasings and openers / closers around them, the held-out eval's phrasing (a template,
opener and closer never trained on) is a new sentence of a familiar kind.
"""

import random
import re

from .words import invent

# Per family; the last is held out (no training template shares three words in a row with it, bar 7 older ones).
TEMPLATES = {
    "read_value": [
        "What is the {key} in {path}?",
        "Read {path} and tell me its {key}.",
        "Look up the {key} value stored in {path}.",
        "Which {key} does {path} give?",
        "Tell me the {key} that {path} holds.",
        "{path} has a {key} entry. What does it say?",
        "Get the {key} out of {path}.",
        "What does {path} list as its {key}?",
        "Open {path}; I want its {key}.",
        "The file {path} stores a {key}. Give it to me.",
        "Please report the {key} written in {path}.",
        "Find the {key} line in {path} and tell me the value.",
        "From {path}, what is the {key}?",
        "Check {path} for the {key}.",
        "Show me what {key} the file {path} records.",
        "My {key} is kept in {path}. What is it set to?",
        "Could you tell me the {key} in {path}?",
        "In {path}, which {key} is recorded?",
        "Say what {path} has for {key}.",
        "What value does {path} have for {key}?",
        "Inside {path} there is a {key}. What is its value?",
        "I am after the {key} stored in {path}.",
        "Read {path} for me and give the {key}.",
        "Pull the {key} out of {path} and report it.",
        "How is {key} set in {path}?",
        "What is written for {key} in {path}?",
        "Look at {path} and give me the {key}.",
        "Please open {path} and find its {key}.",
        "Would you read {path}? I want to know the {key}.",
        "According to {path}, which {key} is set?",
        "I need the {key} from the file {path}. What is it?",
    ],
    "find_file": [
        "One of the files in {d} is for {s}. What {key} does it set?",
        "Find the {s} file in {d} and tell me its {key}.",
        "Somewhere in {d} there is a config for {s}; what is its {key}?",
        "The {d} folder has a file for {s}. Report its {key}.",
        "Look through {d} for the {s} config and give me the {key}.",
        "What {key} is set for {s}? Its file is somewhere in {d}.",
        "In {d}, find the file of {s}; I want the {key}.",
        "There is a file about {s} in {d}. Read it and tell me the {key}.",
        "Which {key} does the {s} file in {d} hold?",
        "Under {d} is a config named after {s}. What is its {key}?",
        "I keep one file per name in {d}. What {key} has {s}?",
        "List {d}, open the file for {s} and report the {key}.",
        "Tell me the {key} of {s}; the config lives in {d}.",
        "Go to {d} and get the {key} from the {s} file.",
        "For {s}, what {key} is set? Look in the folder {d}.",
        "Could you find the {key} for {s}? The file is in {d}.",
        "In {d} there is one file per name. What is the {key} of {s}?",
        "Get me the {key} of {s} from its file in {d}.",
        "Which {key} belongs to {s}? Search {d}.",
        "Inside {d}, one config is about {s}. What {key} does it give?",
        "Open the {s} config in the folder {d} and read its {key}.",
        "The {key} for {s} is in a file under {d}. What is it?",
        "Look in {d}: what {key} does the file for {s} set?",
        "I want the {key} of {s}; it is in one of the files in {d}.",
        "Please report the {key} of {s}. Its config sits in {d}.",
        "Among the files in {d} is one for {s}. Read its {key}.",
        "What does the {s} file in {d} say the {key} is?",
        "Find out the {key} for {s} by looking in {d}.",
        "Under {d}, what {key} does {s} have?",
        "Check the directory {d}: which {key} is configured for {s}?",
    ],
    "compute": [
        "Use the shell to compute {e}.",
        "What is {e}? Compute it with bash.",
        "Run a shell command to work out {e}.",
        "Compute {e} using a shell command.",
        "Evaluate {e} with bash and tell me the result.",
        "I want the value of {e}; use the shell.",
        "Work out {e} by running it in bash.",
        "Let bash tell me what {e} is.",
        "Please compute {e} in the shell.",
        "Run {e} through the shell and give me the answer.",
        "What does {e} come to? Use a command.",
        "Have the shell evaluate {e}.",
        "Find the result of {e} with the terminal.",
        "Shell arithmetic, please: {e}.",
        "Work out {e} for me with a shell command.",
        "Could you compute {e} with bash?",
        "Tell me what {e} equals, using the shell.",
        "Use bash arithmetic to get {e}.",
        "What do I get for {e}? Run it in the shell.",
        "Compute this with bash: {e}",
        "Please evaluate {e} by running a command.",
        "Ask the shell for the value of {e}.",
        "I need {e} worked out with bash.",
        "With a shell command, find what {e} is.",
        "How much is {e}? Use the shell to check.",
        "Get the result of {e} from bash.",
        "Run an echo in bash to compute {e}.",
        "In the shell, work out {e}.",
        "Calculate {e} in the terminal.",
    ],
    "count_lines": [
        "How many lines are in {path}?",
        "Count the lines of {path}.",
        "Tell me the number of lines in {path}.",
        "Find out how many lines {path} has.",
        "{path}: how many lines does it contain?",
        "Give me the number of lines of {path}.",
        "Report how many lines there are in {path}.",
        "Please count how many lines {path} has.",
        "The file {path} has how many lines?",
        "Use wc to count the lines in {path}.",
        "How long is {path} in lines?",
        "I need the line count of the file {path}.",
        "Check how many lines the file {path} holds.",
        "Count every line in {path} and tell me the total.",
        "What number of lines does {path} contain?",
        "Could you count the lines in {path}?",
        "How many lines does the file {path} have?",
        "In {path}, how many lines are there?",
        "Tell me how many lines make up {path}.",
        "Run wc on {path} and tell me how many lines it has.",
        "Tell me the number of lines {path} has.",
        "Count how many lines {path} contains.",
        "Give me the total of lines in {path}.",
        "I want to know how many lines are in {path}.",
        "Please check the number of lines in {path}.",
        "How many lines are written in {path}?",
        "Find the number of lines in {path} with the shell.",
        "Lines in {path}: how many?",
        "What is the line count of {path}?",
    ],
    "write_file": [
        "Create the file {path} containing: {c}",
        'Write "{c}" into {path}.',
        "Save the text {c} to {path}.",
        "Make a file {path} with the content {c}",
        "Write the text {c} to the file {path}.",
        'Store "{c}" in {path}.',
        "I need {path} to contain exactly: {c}",
        "Please write {c} to a file at {path}.",
        "Create {path} and put {c} in it.",
        "The file {path} should say: {c}",
        'Add a file {path} whose text is "{c}".',
        "Write {c} in {path}.",
        "Make {path} hold the line {c}",
        "Save this to {path}: {c}",
        'Put "{c}" into the file {path}.',
        "Could you write {c} into {path}?",
        "Start a file {path} with the text {c}",
        "In {path}, write the text {c}",
        "Please make {path} and write {c} in it.",
        "Write a file named {path} that says {c}",
        "The text {c} should go into {path}.",
        'Put the text "{c}" in {path}.',
        "I want a file {path} containing {c}",
        "Save {c} as the content of {path}.",
        "Fill {path} with: {c}",
        'Write "{c}" to {path}, please.',
        "Make a file at {path} and put {c} inside.",
        "At {path}, create a file that reads {c}",
        "Put the line {c} in a new file {path}.",
    ],
    "grep_file": [
        "Which file in {d} mentions {w}?",
        "Find the file under {d} that contains {w}.",
        "Search {d} for the word {w}: which file has it?",
        "Which file under {d} has the word {w}?",
        "Look in {d} for {w}. Which file is it in?",
        "Tell me the file in {d} that mentions {w}.",
        "One file in {d} contains {w}; which one?",
        "Which of the files in {d} has {w} in it?",
        "Search the folder {d} for {w} and name the file.",
        "I am looking for {w} in {d}. Which file?",
        "Find which file in {d} contains the word {w}.",
        "Grep {d} for {w} and tell me the file.",
        "The word {w} is in one file of {d}. Which file?",
        "What file under {d} contains {w}?",
        "Name the file in {d} where {w} appears.",
        "Could you find which file in {d} contains {w}?",
        "In the folder {d}, which file has {w}?",
        "Which file inside {d} contains the word {w}?",
        "Look for the word {w} in the files of {d}. Which file has it?",
        "Search through {d}: which file contains {w}?",
        "Tell me which file of {d} the word {w} appears in.",
        "Where in {d} is the word {w}? Name the file.",
        "Run grep for {w} in {d} and report the file.",
        "Among the files in {d}, which one mentions {w}?",
        "I need the name of the file in {d} that contains {w}.",
        "Please find the file under {d} with {w} in it.",
        "Which one of the files under {d} mentions {w}?",
        "Inside {d}, find the file that has {w}.",
        "In {d}, what file includes {w}?",
    ],
}
OPENERS = ["Please help. ", "Quick question: ", "Hi! ", "Hello. ", "I have a task for you. ", "Hey, ",
           "Hi there. ", "One thing: ", "Can you help? ", "Next task. ", "Good evening! ", "A question: ",
           "Hello again. ", "New task: ", "Okay. ", "Hey there! ", "Sorry to bother you. ", "Another one: ",
           "Here is a job. ", "Morning. ", "Good morning! ", "Small request: "]
CLOSERS = [" Thanks.", " Thank you!", " Be brief.", " Use the tools you have.", " Answer in one sentence.",
           " Thanks a lot.", " Be quick.", " Many thanks!", " A short answer is fine.", " Use the sandbox.",
           " Much appreciated.", " No rush.", " One line is enough.", " Thanks in advance.", " Appreciate it!",
           " That is all.", " Please be precise.", " Cheers.", " Keep it short, please."]
HELD_OUT_OPENERS, HELD_OUT_CLOSERS = 2, 2  # the last ones of each pool


def _part(pool: list[str], held_out: bool, held: int) -> list[str]:
    return pool[-held:] if held_out else pool[:-held]


def phrase(rng: random.Random, family: str, held_out: bool, unfamiliar: float = 0.0) -> str:
    """A request template of `family`: its last template when held out, else one of the others; half the time
    after an opener and half the time before a closer from the same side of the split. A fraction `unfamiliar`
    of the (training) templates get one or two made-up words (see `with_unfamiliar_words`)."""
    templates = TEMPLATES[family]
    template = templates[-1] if held_out else rng.choice(templates[:-1])
    if not held_out and unfamiliar and rng.random() < unfamiliar:  # (no draw at 0: the evals' tasks stay put)
        template = with_unfamiliar_words(rng, template, rng.randint(1, 2))
    opener = rng.choice(_part(OPENERS, held_out, HELD_OUT_OPENERS)) if rng.random() < 0.5 else ""
    closer = rng.choice(_part(CLOSERS, held_out, HELD_OUT_CLOSERS)) if rng.random() < 0.5 else ""
    return opener + template + closer


# A slot whose name is bare words (a key, a directory, a subject, a word, a file's line): a made-up word beside it
# would make the name ambiguous. A path or an expression has its own shape.
_BARE_SLOT = re.compile(r"\{(key|d|s|w|c)\}")
_PHRASING_WORDS = frozenset(w.lower() for pool in (*TEMPLATES.values(), OPENERS, CLOSERS) for text in pool
                            for w in re.findall(r"[A-Za-z]+", text))


def _made_up(rng: random.Random) -> str:
    """A made-up word that no phrasing uses (`invent` can make `give`)."""
    while (word := invent(rng)) in _PHRASING_WORDS:
        pass
    return word


def with_unfamiliar_words(rng: random.Random, template: str, n: int) -> str:
    """`template` with `n` made-up words, each inserted between two words or put in place of one, never next to a
    bare-word name slot. The tokenizer spells a word it never saw letter by letter, as it spells names; a model that
    only ever saw spelled words in name slots copies any unseen word of a request as a name (run v4 wrote
    "Good morning! ... inbox/tiger.txt" as `nobning/tiger.txt`). Requests whose unseen words are not names teach it
    to find a name by its slot, which is what a new phrasing needs."""
    words = template.split(" ")
    bare = lambda i: 0 <= i < len(words) and _BARE_SLOT.search(words[i]) is not None  # noqa: E731
    for _ in range(n):
        swaps = [i for i, w in enumerate(words)
                 if re.fullmatch(r"[A-Za-z]+[.,:;?!]?", w) and not bare(i - 1) and not bare(i + 1)]
        if swaps and rng.random() < 0.5:
            i = rng.choice(swaps)
            core = re.match(r"[A-Za-z]+", words[i]).group()
            made = _made_up(rng)
            words[i] = (made.capitalize() if core[0].isupper() else made) + words[i][len(core):]
            continue
        i = rng.choice([i for i in range(len(words) + 1) if not bare(i - 1) and not bare(i)])
        made = _made_up(rng)
        if i == 0 and words[0][:1].isupper() and words[0] != "I" and "{" not in words[0]:
            words[0] = words[0][0].lower() + words[0][1:]
        words.insert(i, made.capitalize() if i == 0 else made)
    return " ".join(words)
