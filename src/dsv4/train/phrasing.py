"""How an agent task is asked: a family's request, wrapped in an opener and a closer, each split into a training
side and a held-out side.

A small model that saw eight phrasings of a request learns those eight sentences, not where in a sentence the path
or the key sits (run v4 solved 5/24 held-out tasks: a held-out greeting's word taken for a path, an unseen template
run to the length limit). The training side is therefore a small grammar: frames whose `[a|b|c]` groups and
`<part>` references expand to thousands of sentences (slots before and after the request, word order, synonyms,
greetings and context sentences of 0-2 parts), beside the fixed templates. The held-out side is unchanged: each
family's last fixed template and the last openers / closers, none of which the grammar produces (a test enumerates
every expansion), so the eval's request is still a sentence the model never saw.
"""

import itertools
import random
import re

TEMPLATES = {  # per family; the last template is held out
    "read_value": [
        "What is the {key} in {path}?",
        "Read {path} and tell me its {key}.",
        "Look up the {key} value stored in {path}.",
        "Which {key} does {path} give?",
        "Tell me the {key} that {path} holds.",
        "{path} has a {key} entry. What does it say?",
        "Get the {key} out of {path}.",
        "What does {path} list as its {key}?",
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
        "In {d}, what file includes {w}?",
    ],
}
OPENERS = ["Please help. ", "Quick question: ", "Hi! ", "Hello. ", "I have a task for you. ", "Hey, ",
           "Good morning! ", "Small request: "]
CLOSERS = [" Thanks.", " Thank you!", " Be brief.", " Use the tools you have.", " Answer in one sentence.",
           " Cheers.", " Keep it short, please."]
HELD_OUT_OPENERS, HELD_OUT_CLOSERS = 2, 2  # the last ones of each pool

PARTS = {  # shared pieces of the training grammar
    "ask": "[Tell me|Give me|Report|Show me|Get me|Find|Look up|Fetch|Can you tell me|Could you find|Please give me"
           "|Let me know|Find out|Print|Say]",
    "file": "[{path}|the file {path}|file {path}]",
    "dir": "[{d}|the {d} folder|the folder {d}|the {d} directory|directory {d}]",
    "in": "[in|from|stored in|listed in|written in|set in|inside|recorded in|kept in|saved in]",
    "greet": "[Hi|Hello|Hey|Hey there|Hi there|Good afternoon|Good evening|Greetings|Howdy|Hello again]"
             "[!|.|,]",
    "ask_help": "[Please help.|Quick question:|I have a task for you.|One thing:|A quick task:|Can you help?"
                "|I need some help.|Here is what I need:|Task:|Next task.|Another one:|Help me out here.]",
    "context": "[I am setting up a project.|This is for a report.|I'm in a hurry.|We are debugging a deploy."
               "|My colleague asked me this.|It is for a script.|The workspace is ready.|Sorry to bother you."
               "|I just cloned the repo.|The build is failing.]",
    "close": "[Thanks.|Thank you!|Thanks a lot.|Much appreciated.|Be brief.|Be concise.|Short answer, please."
             "|Use the tools you have.|Answer in one sentence.|Just the answer.|No need to explain.|Ta.|Thx]",
}
FRAMES = {  # per family: the training grammar (beside the fixed templates but the last)
    "read_value": [
        "<ask> the {key} <in> <file>.",
        "What is the {key} [in|from|stored in|listed in|written in|set in|recorded in] <file>?",
        "What {key} is [stored|listed|written|set|given|recorded] in <file>?",
        "[Open|Read|Check|Look at|Inspect|Go through] <file> and [tell me|give me|report|find] the {key}.",
        "<file> [has|contains|holds|defines|lists] a {key}. [What is its value?|Which value?|Tell me the value."
        "|Report it.|What does it say?]",
        "In <file>, [what is the {key}?|which {key} is set?|<ask> the {key}.]",
        "The {key} [in|from|of] <file>: [what is it?|which value?|tell me.]",
        "[Which|What] value does <file> [give|have|set|hold] for {key}?",
        "{key} in <file>?",
    ],
    "find_file": [
        "<ask> the {key} [of|for] the {s} [file|config|settings] in <dir>.",
        "<ask> the {key} for {s}; its [file|config] is [in|somewhere in|under] <dir>.",
        "Which {key} does {s} [use|have|get]? [Look in|Search|Its config is in|The file is somewhere in|Check] <dir>.",
        "[Find|Locate|Open] the {s} [file|config] in <dir> and [tell me|give me|report] its {key}.",
        "[In|Inside|Under] <dir> there is a [file|config] for {s}. [What {key} does it set?|What is its {key}?"
        "|Report its {key}.|Which {key} does it give?]",
        "What is the {key} [set|used|given|defined] for {s}? [Look in|Search|The file is under|It is in] <dir>.",
        "<dir> has [one file per service|a config for each service|several configs]. <ask> the {key} of {s}.",
        "{s}: what is its {key}? The [files|configs] are in <dir>.",
    ],
    "compute": [
        "[Compute|Evaluate|Work out|Find|Figure out|Get|Calculate] {e} [with bash|in the shell|using the shell"
        "|with a shell command|in bash|by running it in bash|on the command line].",
        "What is {e}? [Use the shell.|Use bash.|Run it in bash.|Compute it with a shell command."
        "|Let the shell work it out.|Check with bash.]",
        "[I want|I need|Give me|Tell me] the [value|result] of {e}; [use the shell|use bash|run it in bash].",
        "Use [the shell|bash|a shell command] to [compute|evaluate|work out|get] {e}.",
        "{e} = ? [Use the shell.|Compute it in bash.|Ask the shell.]",
        "Run [echo|a command|bash] to [compute|find] {e}[.| and tell me what it prints.]",
    ],
    "count_lines": [
        "How many lines [are in|are there in] <file>?",
        "How many lines does <file> [have|contain|hold]?",
        "<ask> the number of lines [in|of] <file>.",
        "[Count|Tally] the lines [of|in] <file>[.| for me.]",
        "<file>: how many lines [does it have|are in it|is it]?",
        "[Find out|Check|Tell me] how many lines <file> has.",
        "What is the number of lines in <file>?",
        "[Run|Use] wc on <file>: how many lines?",
    ],
    "write_file": [
        "[Write|Save|Store|Put] [\"{c}\"|the text {c}|the content {c}|this: {c}] [to|into|in] <file>.",
        "[Create|Make|Write] <file> [containing:|with the content|that says|with the text] {c}",
        "I need <file> to [contain|say|hold] {c}",
        "<file> should [contain|say|hold] \"{c}\". [Write it.|Create it.|Please write it.|Make it so.]",
        "[Create|Make] a [new |]file {path} [containing|with|holding] \"{c}\".",
        "Write a file at {path} with [the text|the content|this line:] {c}",
    ],
    "grep_file": [
        "Which file [in|under|inside] <dir> [mentions|contains|has the word|refers to|says] {w}?",
        "<ask> the file [in|under] <dir> that [mentions|contains|has] {w}.",
        "Search <dir> for {w}[.|:] [Which file has it?|Which file is it in?|Where is it?|Tell me the file.]",
        "{w} appears in one file [in|under] <dir>; which one?",
        "[Find|Locate] the file [mentioning|containing] {w} in <dir>.",
        "[Look|Grep] [in|through] <dir> for {w} and [tell me|report|name] the file.",
        "Where in <dir> is {w} mentioned?",
    ],
}
_GROUP, _PART = re.compile(r"\[([^\[\]]*)\]"), re.compile(r"<(\w+)>")


def _expand_parts(frame: str) -> str:
    return _PART.sub(lambda m: PARTS[m.group(1)], frame)


def _sample(rng: random.Random, frame: str) -> str:
    return _GROUP.sub(lambda m: rng.choice(m.group(1).split("|")), _expand_parts(frame))


def expansions(frame: str) -> list[str]:
    """Every sentence `frame` can produce (the tests check the held-out side against them)."""
    pieces = _GROUP.split(_expand_parts(frame))  # literal, group, literal, group, ...
    options = [[p] if i % 2 == 0 else p.split("|") for i, p in enumerate(pieces)]
    return ["".join(choice) for choice in itertools.product(*options)]


def _part(pool: list[str], held_out: bool, held: int) -> list[str]:
    return pool[-held:] if held_out else pool[:-held]


def _training_opener(rng: random.Random) -> str:
    parts = rng.sample(["greet", "ask_help", "context"], rng.choice([1, 1, 2]))
    parts.sort(key=["greet", "ask_help", "context"].index)  # a greeting comes first
    return "".join(_sample(rng, f"<{p}>") + " " for p in parts)


def phrase(rng: random.Random, family: str, held_out: bool) -> str:
    """A request template of `family`. Held out: its last fixed template, half the time after a held-out opener and
    half the time before a held-out closer. Training: half the time a fixed template (not the last), else a
    grammar sentence; half the time after an opener and half the time before a closer, each from the fixed pool or
    the grammar."""
    if held_out:
        template = TEMPLATES[family][-1]
        opener = rng.choice(_part(OPENERS, True, HELD_OUT_OPENERS)) if rng.random() < 0.5 else ""
        closer = rng.choice(_part(CLOSERS, True, HELD_OUT_CLOSERS)) if rng.random() < 0.5 else ""
        return opener + template + closer
    if rng.random() < 0.5:
        template = rng.choice(TEMPLATES[family][:-1])
    else:
        template = _sample(rng, rng.choice(FRAMES[family]))
        template = template[0].upper() + template[1:]  # a frame may open on a lower-case part ("the file ...")
    opener = closer = ""
    if rng.random() < 0.5:
        opener = rng.choice(_part(OPENERS, False, HELD_OUT_OPENERS)) if rng.random() < 0.3 else _training_opener(rng)
    if rng.random() < 0.5:
        closer = rng.choice(_part(CLOSERS, False, HELD_OUT_CLOSERS)) if rng.random() < 0.3 else \
            " " + _sample(rng, "<close>")
    return opener + template + closer
