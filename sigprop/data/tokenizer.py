"""Byte-level BPE tokenizer (HF `tokenizers`), trained on the training split only."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT, PAD, MASK = "<|endoftext|>", "<pad>", "<mask>"
SPECIAL_TOKENS = (EOT, PAD, MASK)  # ids 0, 1, 2: document separator, padding, MLM mask
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte plus the special tokens
MAX_VOCAB = 2**16  # token ids are stored as uint16


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """GPT-2 style byte-level BPE: any text round-trips, no unknown token. Deterministic for a given corpus."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return tok


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """{"eot", "pad", "mask"} -> token id."""
    return {key: tok.token_to_id(tok_str) for key, tok_str in zip(("eot", "pad", "mask"), SPECIAL_TOKENS)}


def tokenizer_sha256(tok: Tokenizer) -> str:
    """Hash of the tokenizer's JSON: two datasets with the same hash tokenize identically."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()
