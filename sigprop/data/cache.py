"""`load_data`: corpus -> tokenizer -> packed rows, built once into an on-disk cache entry, then reused.

A cache entry is one folder (`<cache>/<source>-v<vocab>-t<seq_len>-<key>`) holding tokenizer.json,
train.bin, val.bin (uint16 rows), files.json (which files went where) and meta.json (fingerprint and
shapes). It is built in a temporary folder and renamed into place only when complete, so an interrupted
build never leaves an entry that loads as valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from tokenizers import Tokenizer

from sigprop.data.codeparrot import DEFAULT_MAX_BYTES, HUB_ID, local_identity, records_corpus
from sigprop.data.corpus import Corpus, Document, packages_corpus, packages_identity, stdlib_corpus, stdlib_identity
from sigprop.data.packed import batch_indices, cut_rows, open_rows, write_tokens
from sigprop.data.tokenizer import MAX_VOCAB, MIN_VOCAB, special_ids, tokenizer_sha256, train_tokenizer
from sigprop.errors import SigpropError

FORMAT = 1  # bump when the entry layout changes: old entries then no longer match
SPLITS = ("train", "val")
ENCODE_CHUNK = 64  # documents per encode_batch call (parallel inside tokenizers)
SOURCES_HELP = ("'code' (Python stdlib), 'packages' (stdlib + installed packages), 'codeparrot' (HF hub), "
                "or a path to a .jsonl/.json/.parquet file or folder")


def default_cache_dir() -> Path:
    """$SIGPROP_CACHE, else ~/.cache/sigprop."""
    return Path(os.environ.get("SIGPROP_CACHE") or Path.home() / ".cache" / "sigprop")


@dataclass
class TokenData:
    """Packed token rows of both splits plus everything needed to say what data a run saw."""

    train: np.ndarray  # np.memmap uint16 (N_train, seq_len + 1)
    val: np.ndarray  # np.memmap uint16 (N_val, seq_len + 1)
    tokenizer: Tokenizer
    vocab_size: int
    seq_len: int
    special: dict[str, int]  # {"eot", "pad", "mask"} -> id
    fingerprint: dict
    path: Path  # the cache entry
    _perm_cache: dict = field(default_factory=dict, repr=False)

    def rows(self, split: str) -> np.ndarray:
        """The packed rows of "train" or "val"."""
        if split not in SPLITS:
            raise SigpropError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
        return self.train if split == "train" else self.val

    def batch(self, split: str, batch_size: int, step: int, seed: int = 0) -> torch.Tensor:
        """(B, seq_len+1) int64 rows for training step `step`: a pure function of (split, step, seed).

        Each epoch visits every row once in a seeded random order, so a run resumed at step s sees
        exactly the batches an uninterrupted run would."""
        rows = self.rows(split)
        if int(batch_size) != batch_size or batch_size <= 0:
            raise SigpropError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(step) != step or step < 0:
            raise SigpropError(f"step must be a non-negative integer, got {step!r}")
        if len(rows) == 0:
            raise SigpropError(f"split {split!r} has no rows in {str(self.path)!r}; accepted: a larger corpus (max_bytes) or shorter seq_len")
        idx = batch_indices(len(rows), int(batch_size), int(step), int(seed), SPLITS.index(split))
        return torch.from_numpy(rows[idx].astype(np.int64))

    def probe_batch(self, batch_size: int, seed: int = 0) -> torch.Tensor:
        """A fixed set of validation rows (same for every call with the same seed), for probes during training.
        Rows repeat only if batch_size exceeds the number of validation rows."""
        return self.batch("val", batch_size, 0, seed=10_000 + seed)

    def files(self) -> dict[str, list[str]]:
        """{"train": [...], "val": [...]}: the names of the files in each split."""
        return json.loads((self.path / "files.json").read_text())

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(self.special.values())


# ----------------------------------------------------------------------------- keys and validation

def _check_args(source: object, vocab_size: object, seq_len: object, val_fraction: object, max_bytes: object) -> None:
    if not isinstance(source, (str, os.PathLike)):
        raise SigpropError(f"unknown data source {source!r}; accepted: {SOURCES_HELP}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise SigpropError(f"vocab_size must be an integer in [{MIN_VOCAB}, {MAX_VOCAB}] (uint16 ids), got {vocab_size!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise SigpropError(f"seq_len must be a positive integer, got {seq_len!r}")
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise SigpropError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0):
        raise SigpropError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")


def source_identity(source: str) -> dict:
    """What a cache entry's data depends on, cheap to compute (no reading of file contents, no network)."""
    if source == "code":
        return stdlib_identity()
    if source == "packages":
        return packages_identity()
    if source == "codeparrot":
        return {"source": HUB_ID}  # the stream's first max_bytes are fixed
    if Path(source).exists():
        return local_identity(Path(source))
    raise SigpropError(f"unknown data source {source!r}; accepted: {SOURCES_HELP}")


def _label(source: str) -> str:
    name = source if source in ("code", "packages", "codeparrot") else Path(source).stem
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)[:40] or "data"


def entry_name(source: str, vocab_size: int, seq_len: int, val_fraction: float, max_bytes: int | None) -> str:
    """`<source>-v<vocab>-t<seq_len>-<12 hex of the key>`: readable, and unique per data + settings."""
    key = {"format": FORMAT, "identity": source_identity(source), "vocab_size": vocab_size,
           "seq_len": seq_len, "val_fraction": val_fraction, "max_bytes": max_bytes}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{_label(source)}-v{vocab_size}-t{seq_len}-{digest}"


def is_valid_entry(path: Path) -> bool:
    """A complete entry: meta.json of this format, tokenizer and both .bin files of the recorded size."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != FORMAT or not (path / "tokenizer.json").is_file():
            return False
        return all((path / f"{s}.bin").stat().st_size == int(np.prod(meta["shapes"][s])) * 2 for s in SPLITS)
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ----------------------------------------------------------------------------- building

def _corpus(source: str, val_fraction: float, max_bytes: int | None) -> Corpus:
    if source == "code":
        return stdlib_corpus(val_fraction, max_bytes)
    if source == "packages":
        return packages_corpus(val_fraction, max_bytes)
    return records_corpus(source, val_fraction, max_bytes)


def _chunks(docs: list[Document], tok: Tokenizer) -> Iterator[list[list[int]]]:
    for i in range(0, len(docs), ENCODE_CHUNK):
        texts = [d.read() for d in docs[i : i + ENCODE_CHUNK]]
        yield [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def _progress(enabled: bool) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled)


def build_entry(tmp: Path, source: str, vocab_size: int, seq_len: int, val_fraction: float,
                max_bytes: int | None, progress: bool) -> None:
    """Write a complete entry into `tmp`: train the tokenizer on the train split, encode, pack; meta.json last."""
    start = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(f"reading corpus {source!r}", total=None)
        corpus = _corpus(source, val_fraction, max_bytes)
        bar.update(task, total=1, completed=1)
        if not corpus.train or not corpus.val:
            raise SigpropError(f"source {source!r} gave {len(corpus.train)} train / {len(corpus.val)} validation files; accepted: a corpus with both (raise max_bytes)")

        task = bar.add_task(f"training BPE tokenizer (vocab {vocab_size})", total=None)
        tok = train_tokenizer([d.read() for d in corpus.train], vocab_size)
        tok.save(str(tmp / "tokenizer.json"))
        special = special_ids(tok)
        bar.update(task, total=1, completed=1)

        shapes, n_tokens = {}, {}
        for split, docs in (("train", corpus.train), ("val", corpus.val)):
            task = bar.add_task(f"encoding {split} files", total=len(docs))
            n_tokens[split] = write_tokens(_chunks(docs, tok), special["eot"], tmp / f"{split}.bin",
                                           on_chunk=lambda n, t=task: bar.advance(t, n))
            shapes[split] = cut_rows(tmp / f"{split}.bin", n_tokens[split], seq_len)
        if shapes["val"][0] == 0 or shapes["train"][0] == 0:
            raise SigpropError(f"source {source!r} is too small for seq_len {seq_len}: rows train/val = {shapes['train'][0]}/{shapes['val'][0]}; accepted: more data (max_bytes) or a shorter seq_len")

    fingerprint = corpus.fingerprint() | {
        "vocab_size": vocab_size, "seq_len": seq_len, "val_fraction": val_fraction, "max_bytes": max_bytes,
        "tokenizer_sha256": tokenizer_sha256(tok),
        "tokens_train": n_tokens["train"], "tokens_val": n_tokens["val"],
        "rows_train": shapes["train"][0], "rows_val": shapes["val"][0],
    }
    fingerprint["sha256"] = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    (tmp / "files.json").write_text(json.dumps({"train": [d.name for d in corpus.train], "val": [d.name for d in corpus.val]}))
    meta = {"format": FORMAT, "fingerprint": fingerprint, "shapes": shapes, "special": special,
            "build_seconds": round(time.perf_counter() - start, 2)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks the entry complete


def _open_entry(path: Path) -> TokenData:
    meta = json.loads((path / "meta.json").read_text())
    fp = meta["fingerprint"]
    return TokenData(
        train=open_rows(path / "train.bin", meta["shapes"]["train"]),
        val=open_rows(path / "val.bin", meta["shapes"]["val"]),
        tokenizer=Tokenizer.from_file(str(path / "tokenizer.json")),
        vocab_size=fp["vocab_size"], seq_len=fp["seq_len"], special=meta["special"], fingerprint=fp, path=path,
    )


def load_data(source: str = "code", vocab_size: int = 8192, seq_len: int = 128, cache_dir: str | Path | None = None,
              progress: bool = True, max_bytes: int | None = None, val_fraction: float = 0.05) -> TokenData:
    """Tokenized, packed data of `source`, built once (with a progress bar) and reused from the cache.

    source: "code" (the running Python's stdlib, default), "packages" (stdlib + site-packages), "codeparrot" (HF hub, needs network; capped at
    200 MB unless max_bytes says otherwise), or a local .jsonl/.json/.parquet file or folder of
    {"repo_name", "path", "content"} records. max_bytes caps the corpus (each split keeps its share)."""
    _check_args(source, vocab_size, seq_len, val_fraction, max_bytes)
    source = str(source)
    if source == "codeparrot" and max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / entry_name(source, vocab_size, seq_len, float(val_fraction), max_bytes)
    if is_valid_entry(final):
        return _open_entry(final)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the entry should read like any cache folder
    try:
        build_entry(tmp, source, vocab_size, seq_len, float(val_fraction), max_bytes, progress)
        if final.exists() and not is_valid_entry(final):
            shutil.rmtree(final)  # an incomplete or outdated entry under our name (we made it)
        try:
            os.replace(tmp, final)
        except OSError:
            if not is_valid_entry(final):  # a concurrent build won the race only if it left a valid entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _open_entry(final)


def cache_entries(cache_dir: str | Path | None = None) -> list[dict]:
    """Every complete entry in the cache: {"path", "name", "meta", "bytes_on_disk"}, sorted by name."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_dir() and not path.name.startswith(".") and is_valid_entry(path):
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            out.append({"path": path, "name": path.name, "meta": json.loads((path / "meta.json").read_text()), "bytes_on_disk": size})
    return out
