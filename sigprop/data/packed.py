"""Packed token rows: documents joined by EOT, cut into non-overlapping rows of seq_len + 1 uint16 tokens.

Row r is tokens[r*(T+1) : (r+1)*(T+1)]; a language model reads row[:-1] and predicts row[1:].
The last partial row is dropped (as the paper keeps only full 128-token chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

DTYPE = np.uint16


def write_tokens(chunks: Iterable[list[list[int]]], eot: int, path: Path, on_chunk: Callable[[int], None] | None = None) -> int:
    """Append each encoded document followed by EOT to a flat uint16 file; returns the token count."""
    n = 0
    with open(path, "wb") as f:
        for docs in chunks:
            joined: list[int] = []
            for ids in docs:
                joined.extend(ids)
                joined.append(eot)
            flat = np.asarray(joined, dtype=np.int64)
            if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(DTYPE).max):
                raise ValueError(f"token id out of uint16 range: {flat.min()}..{flat.max()}")
            f.write(flat.astype(DTYPE).tobytes())
            n += flat.size
            if on_chunk is not None:
                on_chunk(len(docs))
    return n


def cut_rows(path: Path, n_tokens: int, seq_len: int) -> tuple[int, int]:
    """Truncate the flat token file to whole rows of seq_len + 1; returns the rows' shape."""
    rows = n_tokens // (seq_len + 1)
    with open(path, "r+b") as f:
        f.truncate(rows * (seq_len + 1) * np.dtype(DTYPE).itemsize)
    return rows, seq_len + 1


def open_rows(path: Path, shape: tuple[int, int]) -> np.memmap:
    """The packed rows as a read-only memmap (an empty array when there are no rows)."""
    if shape[0] == 0:
        return np.zeros(shape, dtype=DTYPE)  # np.memmap refuses empty files
    return np.memmap(path, dtype=DTYPE, mode="r", shape=tuple(shape))


def epoch_permutation(n_rows: int, seed: int, epoch: int, split: int) -> np.ndarray:
    """The row order of one epoch: a fixed function of (seed, epoch, split), so resumed runs replay it."""
    return np.random.default_rng([seed, epoch, split]).permutation(n_rows)


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int, split: int) -> np.ndarray:
    """Row indices of batch `step`: samples step*B .. step*B+B-1 of the endless epoch-by-epoch stream."""
    k = np.arange(step * batch_size, (step + 1) * batch_size)
    epoch, pos = np.divmod(k, n_rows)
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epoch):  # a batch spans at most a few epochs
        sel = epoch == e
        out[sel] = epoch_permutation(n_rows, seed, int(e), split)[pos[sel]]
    return out
