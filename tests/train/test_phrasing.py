import random
import re

from dsv4.train.phrasing import TEMPLATES, phrase, with_unfamiliar_words
from dsv4.train.words import POOLED

KNOWN = {w.lower() for ts in TEMPLATES.values() for t in ts for w in re.findall(r"[A-Za-z]+", t)}
SLOT_WORD = re.compile(r"\{(key|d|s|w|c)\}")


def made_up(word: str) -> bool:
    core = re.sub(r"[^A-Za-z]", "", word).lower()
    return bool(core) and "{" not in word and core not in KNOWN and core not in POOLED


def test_unfamiliar_words_keep_every_slot_and_never_touch_a_bare_one():
    rng = random.Random(0)
    for family, templates in TEMPLATES.items():
        for template in templates:
            for n in (1, 2):
                for _ in range(30):
                    out = with_unfamiliar_words(rng, template, n)
                    assert re.findall(r"\{\w+\}", out) == re.findall(r"\{\w+\}", template), (family, out)
                    words = out.split(" ")
                    new = [i for i, w in enumerate(words) if made_up(w)]
                    assert 1 <= len(new) <= n, (template, out)
                    assert len(template.split(" ")) <= len(words) <= len(template.split(" ")) + n
                    for i in new:  # a made-up word is never right beside a bare-word name
                        beside = words[max(0, i - 1):i] + words[i + 1:i + 2]
                        assert not any(SLOT_WORD.search(w) for w in beside), (template, out)


def test_a_word_put_first_is_capitalised_and_the_old_first_word_lowered():
    rng = random.Random(3)
    firsts = {with_unfamiliar_words(rng, "Count the lines of {path}.", 1).split(" ")[:2].__repr__()
              for _ in range(200)}
    assert any(f.startswith("['Count'") is False and "'count'" in f for f in firsts)  # inserted before "Count"


def test_held_out_phrasings_get_no_unfamiliar_words():
    rng = random.Random(1)
    for family, templates in TEMPLATES.items():
        for _ in range(20):
            prompt = phrase(rng, family, held_out=True, unfamiliar=1.0)
            assert templates[-1] in prompt


def test_the_fraction_of_training_phrasings_with_unfamiliar_words():
    rng = random.Random(2)
    prompts = [phrase(rng, "read_value", held_out=False, unfamiliar=0.5) for _ in range(400)]
    changed = sum(not any(t in p for t in TEMPLATES["read_value"][:-1]) for p in prompts)
    assert 0.4 < changed / len(prompts) < 0.6


def _runs(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\{\w+\}|[A-Za-z]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


# Training templates written before the held-out guard below that share three words in a row with the held-out one
EARLIER_OVERLAPS = {
    "The file {path} stores a {key}. Give it to me.", "From {path}, what is the {key}?",
    "Show me what {key} the file {path} records.", "My {key} is kept in {path}. What is it set to?",
    "Please compute {e} in the shell.", "I need the line count of the file {path}.", "Make {path} hold the line {c}",
}


def test_training_templates_ask_for_the_same_slots_and_stay_apart_from_the_held_out_one():
    # The held-out template measures an unseen sentence: a training one that shares three words in a row with it
    # (`a new file`, `{d} which {key}`) would teach part of that sentence.
    for family, templates in TEMPLATES.items():
        held_out, training = templates[-1], templates[:-1]
        assert len(set(templates)) == len(templates) >= 28, family
        for template in training:
            assert sorted(re.findall(r"\{\w+\}", template)) == sorted(re.findall(r"\{\w+\}", held_out)), template
            assert template in EARLIER_OVERLAPS or not _runs(template, 3) & _runs(held_out, 3), template
