"""The built-in model's small byte-level BPE tokenizer, trained with `tokenizers` on the synthetic corpus.

A few thousand ids keep the embedding and lm head from dominating a model of a few million parameters (V4's real
vocabulary of 129,280 would be 33M parameters at dim 128). Byte-level, so any text round-trips; digits are split
one per token, so a number is copied digit by digit; every special token dsv4.encoding emits is an added token
with a single id (kept when decoding, as V4's own tokenizer.json keeps them), BOS = 0 and EOS = 1 as V4's
config.json says.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dsv4.encoding import tokens

# Order fixes the ids: BOS 0, EOS 1 (config.json's bos/eos_token_id), then the rest.
SPECIAL_TOKENS = (tokens.BOS, tokens.EOS, tokens.USER, tokens.ASSISTANT, tokens.THINK_START, tokens.THINK_END,
                  tokens.LATEST_REMINDER, tokens.DSML, *tokens.TASK_TOKENS.values())


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    """A byte-level BPE of `vocab_size` ids (special tokens and the 256 byte symbols included) learned from
    `texts`."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for merges beyond the 256 bytes and "
                         f"{len(SPECIAL_TOKENS)} special tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise AssertionError(f"special token {t!r} got id {tok.token_to_id(t)}, expected {i}")
    return tok
