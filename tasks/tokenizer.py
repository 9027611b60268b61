"""Tokenizers for task families, built with Hugging Face `tokenizers`: a word-level vocabulary where every token
is known in advance (star-graph node labels), and a byte-level BPE trained offline on a task's own training text."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tasks.base import SPECIAL_TOKENS

MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS)
"""The smallest byte-level BPE: every byte and the special tokens, no merges."""


def word_level(tokens: list[str]) -> Tokenizer:
    """Whitespace-separated words, one id each: SPECIAL_TOKENS first, then `tokens` in order."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + [t for t in tokens if t not in SPECIAL_TOKENS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def byte_level_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE (GPT-2's scheme: any text encodes, nothing is unknown) trained on `texts`, SPECIAL_TOKENS
    first. Deterministic for the same texts and size; checkpoints store the tokenizer itself anyway."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer
