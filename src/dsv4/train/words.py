"""Word pools of the synthetic data, each split into a training part and a held-out part: held-out agent tasks
and retrieval evals draw their names from words the model never saw in that role. Training tasks may also use
made-up words, so that a name is something to copy rather than one of a few hundred to remember."""

import random
from dataclasses import dataclass

NOUNS = """
apple anchor badge barrel beacon bison blossom boulder bramble bridge bucket cabin candle canyon carpet castle
cedar chalk cherry cinder clover cobalt comet copper coral cotton crane crystal dagger delta desert dolphin dragon
eagle ember falcon feather fern fiddle flint forest fossil garnet glacier granite gravel harbor hazel heron hollow
island ivory jasper juniper kernel kettle lagoon lantern lemon lilac lizard locket lotus magnet maple marble meadow
mirror mosaic nectar nickel oasis onyx orchid otter oyster paddle panther pearl pebble pepper pigeon pillar pine
planet plum prairie quartz quill rabbit raven reef ribbon river rocket saddle salmon sapphire scarlet shadow
silver spruce squid summit thistle thunder tiger timber topaz tulip tundra velvet violet walnut willow winter
zephyr acorn amber arrow aspen basil birch cactus cobra cricket cypress garden ginger hammer jungle lynx
""".split()

KEYS = """
port timeout retries threshold version limit capacity seed offset quota budget priority level region zone color
owner speed weight height depth width radius count score index code rank batch shard replica channel volume
""".split()

SUBJECTS = """
alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo
sierra tango uniform victor whiskey xray yankee zulu atlas boreas ceres draco eos freya gaia helios iris juno
""".split()

DIRS = """
data config notes logs reports settings records archive docs input output share var srv etc build cache tmp
assets vault stash inbox drafts ledger files store
""".split()


def split(pool: list[str], held_out: bool, fraction: float = 0.25) -> list[str]:
    """The pool's training part (the first 75%) or its held-out part (the rest)."""
    cut = int(len(pool) * (1 - fraction))
    return pool[cut:] if held_out else pool[:cut]


def pick(rng: random.Random, pool: list[str], held_out: bool, k: int = 1) -> list[str]:
    return rng.sample(split(pool, held_out), k)


POOLED = frozenset(NOUNS + KEYS + SUBJECTS + DIRS)
# Syllable parts with the clusters real words have (st, ng, io, ...). Run v7's made-up words were strict
# consonant-vowel alternations, and in agent turns it wrote unseen real names in that shape even a few tokens from
# the request (`jungle` -> `julll`, `freya` -> `feee`, `stash` -> `stsh`, `tundra` -> `tetr`), while it copied
# them exactly in copy turns, whose words are random letters. Run v6's clusters came without random letters.
ONSETS = "b bl br c ch cl cr d dr f fl fr g gl gr h j k l m n p ph pl pr qu r s sc sh sk sl sn sp st str sw t th " \
         "tr v w wh z".split()
NUCLEI = "a e i o u a e i o u y ai au ea ee ei eo ia ie io oa oi oo ou ue".split()
CODAS = "b ck d f g k l ll lt m n nd ng nk nt p r rd rk rn rt s sh sk sp ss st t th x".split()
LOWER = "abcdefghijklmnopqrstuvwxyz"


def invent(rng: random.Random) -> str:
    """A made-up word of 4-10 letters that no pool holds: half are letters at random (nothing but a copy
    reproduces them), half 1-3 syllables with real words' clusters."""
    while True:
        if rng.random() < 0.5:
            word = "".join(rng.choice(LOWER) for _ in range(rng.randint(4, 9)))
        else:
            word = "".join((rng.choice(ONSETS) if rng.random() < 0.8 else "") + rng.choice(NUCLEI)
                           + (rng.choice(CODAS) if rng.random() < 0.45 else "") for _ in range(rng.randint(1, 3)))
        if 4 <= len(word) <= 10 and word not in POOLED:
            return word


@dataclass(frozen=True)
class Names:
    """Where a task draws its names: the training or held-out part of each pool, and in training a fraction
    `invented` of them made up instead. Run v3 solved 9/12 tasks named from the training pools and 0/24 named
    from the held-out ones: with ~100 nouns a small model learns the names themselves, not to copy them."""

    held_out: bool = False
    invented: float = 0.0
    unfamiliar: float = 0.0  # of training requests: phrased with made-up words (phrasing.with_unfamiliar_words)

    def pick(self, rng: random.Random, pool: list[str], k: int = 1) -> list[str]:
        """k distinct names from `pool`'s part (each made up with probability `invented`)."""
        names = pick(rng, pool, self.held_out, k)
        if not self.invented:  # no draws: held-out and seen eval tasks stay as they were
            return names
        out: list[str] = []
        for name in names:
            if rng.random() < self.invented:
                name = invent(rng)
            while name in out:  # two made-up names alike (pool names are distinct and never made up)
                name = invent(rng)
            out.append(name)
        return out
