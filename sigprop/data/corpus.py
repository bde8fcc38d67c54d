"""The text corpus: documents (one per source file) split into train/validation BY FILE.

The default source ("code") is the Python standard library of the running interpreter: real code, no network,
about 1,800 files / 31 MB on CPython 3.11. "packages" adds every installed package's *.py (site-packages:
~250 MB beside sigprop's own dependencies, ~1 GB in a GPU image), for models that would repeat the stdlib's
~9M tokens many times (the gpu scale). A file's split depends only on its name (a sha256 hash), so adding
files never moves an existing file between train and validation.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


@dataclass(frozen=True)
class Document:
    """One source file: `name` decides its split, `nbytes` counts toward `max_bytes`."""

    name: str
    nbytes: int
    read: Callable[[], str] = field(repr=False, compare=False)


@dataclass
class Corpus:
    """The documents of each split, plus a fingerprint of exactly which files they are."""

    source: str
    train: list[Document]
    val: list[Document]

    def fingerprint(self) -> dict:
        """Source, Python version, file count, sha256 of the sorted (name, size) list, total bytes."""
        docs = sorted(self.train + self.val, key=lambda d: d.name)
        listing = json.dumps([[d.name, d.nbytes] for d in docs], separators=(",", ":"))
        return {
            "source": self.source,
            "python": ".".join(map(str, sys.version_info[:3])),
            "files": len(docs),
            "files_train": len(self.train),
            "files_val": len(self.val),
            "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
            "bytes": sum(d.nbytes for d in docs),
        }


def split_of(name: str, val_fraction: float) -> str:
    """'val' iff sha256(name), read as a number in [0, 1), falls below val_fraction; else 'train'."""
    u = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"


def take_budget(docs: Iterable[Document], val_fraction: float, max_bytes: int | None) -> tuple[list[Document], list[Document]]:
    """Split docs by name hash; with max_bytes, each split keeps documents (in order) until it holds its share.

    Capping each split separately keeps a small (test-scale) corpus from ending up with no validation files.
    Stops reading the iterable as soon as both shares are full, so streamed sources are read only that far.
    """
    splits: dict[str, list[Document]] = {"train": [], "val": []}
    if max_bytes is None:
        for d in docs:
            splits[split_of(d.name, val_fraction)].append(d)
        return splits["train"], splits["val"]
    budget = {"train": (1 - val_fraction) * max_bytes, "val": val_fraction * max_bytes}
    used = {"train": 0, "val": 0}
    for d in docs:
        s = split_of(d.name, val_fraction)
        if used[s] < budget[s]:
            splits[s].append(d)
            used[s] += d.nbytes
        if all(used[k] >= budget[k] for k in used):
            break
    return splits["train"], splits["val"]


# ----------------------------------------------------------------------------- the stdlib corpus

def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Sorted relative paths of every *.py under the stdlib, skipping site-/dist-packages (user installs)."""
    root = stdlib_root() if root is None else Path(root)
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]  # prune: never walk into user installs
        rel = Path(folder).relative_to(root)
        out += [(rel / f).as_posix() for f in files if f.endswith(".py") and (Path(folder) / f).is_file()]
    return sorted(out)


def _reader(path: Path) -> Callable[[], str]:
    return lambda: path.read_text(encoding="utf-8", errors="replace")


def stdlib_documents(root: Path | None = None) -> Iterator[Document]:
    """The stdlib files as lazily read documents, sizes from stat (cheap to list, read only when kept)."""
    root = stdlib_root() if root is None else Path(root)
    for rel in stdlib_files(root):
        path = root / rel
        yield Document(rel, path.stat().st_size, _reader(path))


def stdlib_corpus(val_fraction: float = 0.05, max_bytes: int | None = None, root: Path | None = None) -> Corpus:
    """The default corpus: Python's own standard library, split by file."""
    train, val = take_budget(stdlib_documents(root), val_fraction, max_bytes)
    return Corpus("code", train, val)


# ----------------------------------------------------------------------------- stdlib + installed packages

def package_roots() -> list[Path]:
    """The running interpreter's site-packages folders (purelib, platlib), deduplicated, those that exist."""
    paths = sysconfig.get_paths()
    roots = dict.fromkeys(Path(paths[k]).resolve() for k in ("purelib", "platlib"))
    return [r for r in roots if r.is_dir()]


def package_documents() -> Iterator[Document]:
    """stdlib and site-packages *.py in a fixed pseudo-random order (sha256 of the name), so that a max_bytes cap
    takes a sample across packages, not the alphabetically first ones. Names: 'stdlib/...' and 'site/...'."""
    docs = [Document(f"stdlib/{d.name}", d.nbytes, d.read) for d in stdlib_documents()]
    for root in package_roots():
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            rel = Path(folder).relative_to(root)
            for f in files:
                path = Path(folder) / f
                if f.endswith(".py") and path.is_file():
                    docs.append(Document(f"site/{(rel / f).as_posix()}", path.stat().st_size, _reader(path)))
    unique = {d.name: d for d in docs}  # purelib == platlib on most systems
    yield from sorted(unique.values(), key=lambda d: hashlib.sha256(d.name.encode()).digest())


def packages_corpus(val_fraction: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """Python's stdlib plus every installed package, split by file: a large local corpus with no network."""
    train, val = take_budget(package_documents(), val_fraction, max_bytes)
    return Corpus("packages", train, val)


def packages_identity() -> dict:
    """What the cache key depends on for "packages": Python version and the (name, size) listing."""
    listing = json.dumps([[d.name, d.nbytes] for d in package_documents()], separators=(",", ":"))
    return {"source": "packages", "python": sys.version, "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def stdlib_identity(root: Path | None = None) -> dict:
    """What the cache key depends on for the stdlib: Python version and the (path, size) listing."""
    docs = list(stdlib_documents(root))
    listing = json.dumps([[d.name, d.nbytes] for d in docs], separators=(",", ":"))
    return {"source": "code", "python": sys.version, "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()}
