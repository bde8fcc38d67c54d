"""Data: a local code corpus (the Python stdlib) or CodeParrot, a byte-level BPE tokenizer, packed uint16 rows.

    data = load_data("code", vocab_size=8192, seq_len=128)
    x = data.batch("train", batch_size=32, step=0)          # (32, 129) int64; input x[:, :-1], target x[:, 1:]
    inputs, targets = mlm_mask(x, data.special["mask"], data.vocab_size, special_ids=data.special_ids)
"""

from sigprop.data.cache import TokenData, cache_entries, default_cache_dir, load_data
from sigprop.data.corpus import Corpus, Document, split_of, stdlib_files
from sigprop.data.mlm import mlm_mask
from sigprop.data.tokenizer import SPECIAL_TOKENS, train_tokenizer

__all__ = ["SPECIAL_TOKENS", "Corpus", "Document", "TokenData", "cache_entries", "default_cache_dir", "load_data",
           "mlm_mask", "split_of", "stdlib_files", "train_tokenizer"]
