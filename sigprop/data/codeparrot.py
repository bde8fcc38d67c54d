"""CodeParrot-format records (`{"repo_name", "path", "content"}`) through HF `datasets`, streamed.

`source="codeparrot"` streams the paper's corpus from the Hugging Face hub (needs network); a local
.jsonl/.json/.parquet file or folder in the same format goes through exactly the same code path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from sigprop.data.corpus import Corpus, Document, take_budget
from sigprop.errors import SigpropError

HUB_ID = "codeparrot/codeparrot-clean-train"
DEFAULT_MAX_BYTES = 200_000_000  # ~200 MB of code (~60M tokens): a useful CPU-scale slice of the ~50 GB corpus
BUILDERS = {".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json", ".parquet": "parquet"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((ext for ext in sorted(BUILDERS, key=len, reverse=True) if name.endswith(ext)), "")


def local_files(path: Path) -> tuple[str, list[Path]]:
    """(datasets builder, sorted files) for a local file or folder of CodeParrot-format records."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p))
    builders = {BUILDERS.get(_suffix(p)) for p in files}
    if not files or None in builders:
        raise SigpropError(f"no .jsonl/.json/.parquet records in {str(path)!r}; accepted: a file or folder of them")
    if len(builders) > 1:
        raise SigpropError(f"mixed record formats in {str(path)!r}; accepted: only json(l) or only parquet files")
    return builders.pop(), files


def local_identity(path: Path) -> dict:
    """Cache-key identity of local record files: resolved paths, sizes and modification times."""
    _, files = local_files(path)
    listing = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return {"source": str(Path(path).resolve()), "listing_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}


def open_records(source: str) -> Iterable[dict]:
    """A streaming `datasets` IterableDataset of records: the hub's CodeParrot, or local files."""
    try:
        import datasets
    except ImportError as e:
        raise SigpropError(f"source {source!r} needs the `datasets` package (pip install 'sigprop[hf]'), or use source='code'") from e
    if source == "codeparrot":
        try:
            return datasets.load_dataset(HUB_ID, split="train", streaming=True)
        except Exception as e:  # offline, hub down, auth: all mean the same thing to the user
            raise SigpropError(
                f"cannot load {HUB_ID!r} from the Hugging Face hub ({type(e).__name__}); "
                "without network use source='code' (Python standard library)"
            ) from e
    builder, files = local_files(Path(source))
    return datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", streaming=True)


def quiet_datasets(records: Iterable[dict]) -> Iterator[dict]:
    """Iterate a `datasets` stream with its logger held at ERROR-and-above off: a bad file already becomes one
    SigpropError line here, so the library's own "Failed to load JSON ..." log line is a duplicate."""
    import logging

    log = logging.getLogger("datasets")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield from records
    finally:
        log.setLevel(level)


def record_name(record: dict, index: int) -> str:
    """The name a record is split by: repo_name/path when present, else its position in the stream."""
    parts = [str(record[k]) for k in ("repo_name", "path") if record.get(k)]
    return "/".join(parts) if parts else f"record-{index}"


def record_documents(records: Iterable[dict], source: str) -> Iterator[Document]:
    """Documents from records' "content" field (text held in memory: a stream cannot be re-read)."""
    try:
        for i, rec in enumerate(quiet_datasets(records)):
            if "content" not in rec:
                raise SigpropError(f"record {i} of {source!r} has no 'content' field; accepted: CodeParrot records {{repo_name, path, content}}")
            text = rec["content"] or ""
            yield Document(record_name(rec, i), len(text.encode("utf-8")), (lambda t=text: t))
    except SigpropError:
        raise
    except Exception as e:  # network dropped mid-stream, unreadable file
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        hint = ("without network use source='code'" if source == "codeparrot"
                else "accepted: .jsonl / .json / .parquet files of {repo_name, path, content} records")
        raise SigpropError(f"reading {source!r} failed ({detail}); {hint}") from e


def records_corpus(source: str, val_fraction: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """CodeParrot (hub, capped at DEFAULT_MAX_BYTES unless told) or local records, split by name hash."""
    if source == "codeparrot" and max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
    train, val = take_budget(record_documents(open_records(source), source), val_fraction, max_bytes)
    return Corpus(source, train, val)
