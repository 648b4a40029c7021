"""The built-in model's small byte-level tokenizer, learned with `tokenizers` from the synthetic corpus.

A few hundred ids keep the embedding and lm head from dominating a model of a few million parameters (V4's real
vocabulary of 129,280 would be 33M parameters at dim 128). It is a BPE model without merges whose vocabulary is
the 256 byte symbols plus the corpus's most frequent whole words (`ignore_merges`: a word in the vocabulary is one
id, any other word is spelled byte by byte). Names are kept out of the vocabulary (`spelled`), so a file name,
path or key is spelled letter by letter: the model copies it from the request with the same induction that copies
a passkey's digits, and a name it never saw is made of letters it has copied thousands of times. A trained BPE
gave each training name one id and split unseen names into rare pieces, and a small model learned neither copy.
Digits are split one per token. Byte-level, so any text round-trips; every special token dsv4.encoding emits is
an added token with a single id (kept when decoding, as V4's own tokenizer.json keeps them), BOS = 0 and EOS = 1
as V4's config.json says.
"""

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from dsv4.encoding import tokens

# Order fixes the ids: BOS 0, EOS 1 (config.json's bos/eos_token_id), then the rest.
SPECIAL_TOKENS = (tokens.BOS, tokens.EOS, tokens.USER, tokens.ASSISTANT, tokens.THINK_START, tokens.THINK_END,
                  tokens.LATEST_REMINDER, tokens.DSML, *tokens.TASK_TOKENS.values())
BYTES = sorted(pre_tokenizers.ByteLevel.alphabet())


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, spelled: Iterable[str] = (),
                    min_count: int = 2) -> Tokenizer:
    """At most `vocab_size` ids (special tokens and the 256 byte symbols included): the words of `texts` seen at
    least `min_count` times, most frequent first, except the words in `spelled` (compared without case or the
    leading space), which stay spelled byte by byte."""
    room = vocab_size - len(SPECIAL_TOKENS) - len(BYTES)
    if room < 1:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for words beyond the 256 bytes and "
                         f"{len(SPECIAL_TOKENS)} special tokens")
    pre, names = _pre_tokenizer(), {w.lower() for w in spelled}
    counts = Counter(w for text in texts for part in _split_special(text) for w, _ in pre.pre_tokenize_str(part))
    words = [w for w, n in counts.most_common() if n >= min_count and len(w) > 1 and w not in BYTES
             and w.lstrip("Ġ").lower() not in names][:room]
    vocab = {t: i for i, t in enumerate((*SPECIAL_TOKENS, *BYTES, *words))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise AssertionError(f"special token {t!r} got id {tok.token_to_id(t)}, expected {i}")
    return tok


def _split_special(text: str) -> list[str]:
    """`text` without its special tokens (they are added tokens, never words of the vocabulary)."""
    parts = [text]
    for t in SPECIAL_TOKENS:
        parts = [p for part in parts for p in part.split(t)]
    return parts
