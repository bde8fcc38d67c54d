"""The run directory: everything one training run writes, and `load_runs` to read many of them as DataFrames.

    runs/sas-p/
      config.json        resolved block knobs + model config + train config + data fingerprint
      env.json           python / torch versions, device, threads, hostname, git commit
      metrics.jsonl      one JSON line per step (step, time, tokens, lr, loss, grad_norm[, eval_loss]), flushed
      probes.jsonl       one JSON line per probe row (step, source, layer, module, metric, head, value), flushed
      checkpoints/last.pt  model + optimiser + RNG + step, written atomically (temp file + os.replace)
      checkpoints/step-0000100/  a kept weight snapshot (--keep-checkpoints N): `save_pretrained`'s config.json +
                         model.safetensors, so `Transformer.from_pretrained` and `sigprop analyze --run` read it
      tensorboard/, wandb/  an experiment tracker's copy of the records (--log), a view: the files above are the record
      summary.json       final numbers (also written when a run stops early, with its status)
      *.jsonl.gz         a finished run's records packed for committing (`RunDir.pack`); read as the plain ones
      .lock              held (flock) by the one process writing the run; names its pid

Records are append-only while a run trains (a packed run is unpacked before it trains again). On --resume they
are first cut back to the checkpoint's step (`RunDir.truncate`), so a step killed between checkpoints is replayed
without appearing twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import gzip
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sigprop.errors import SigpropError

CONFIG, ENV, METRICS, PROBES, SUMMARY = "config.json", "env.json", "metrics.jsonl", "probes.jsonl", "summary.json"
LOGS = (METRICS, PROBES)  # the append-only records, which `RunDir.pack` gzips once a run is finished
CHECKPOINT = Path("checkpoints") / "last.pt"
LOCK = ".lock"
#: A kept snapshot's folder name (checkpoints/step-0000100): zero-padded, so names sort by step.
KEPT = "step-{:07d}"
_KEPT_RE = re.compile(r"step-(\d+)")
#: Folders the experiment trackers write into a run (sigprop.training.loggers).
TRACKERS = ("tensorboard", "wandb")


def _json_default(o: object) -> object:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple, Path)):
        return list(o) if not isinstance(o, Path) else str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: object) -> object:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def dumps(obj: object, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), default=_json_default, indent=indent, allow_nan=False)


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


#: The process umask, so atomic writes get the mode open() would give (mkstemp always makes 0600).
_UMASK = _read_umask()


@contextlib.contextmanager
def naming(path: str | Path):
    """An OSError raised inside names `path` (a full disk's write error carries no file name otherwise)."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same folder + os.replace, so a reader never sees half a file
    (on a full disk the old file stays as it was)."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def check_writable(folder: str | Path) -> None:
    """Fail now, not after minutes of work, if `folder` cannot be created or written (OSError names it)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SigpropError(f"output folder {str(folder)!r} is a file; accepted: a directory path")
    with naming(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_bytes(path, (dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SigpropError(f"cannot read {path}: {e}") from None


def _step_of(line: bytes) -> int | None:
    """The `step` of one JSON record line (None for a torn or foreign line)."""
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def packed(path: str | Path) -> Path:
    """Where `path`'s records lie when packed: the same name plus .gz."""
    path = Path(path)
    return path.with_name(path.name + ".gz")


PACKED = tuple(packed(n).name for n in LOGS)  # metrics.jsonl.gz, probes.jsonl.gz


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete JSON lines of a file, or of its packed .gz twin (a torn last line from a crash is skipped)."""
    for p in (Path(path), packed(path)):  # the plain file first; it may vanish as it is packed: then the twin
        try:
            with gzip.open(p, "rt") if p.suffix == ".gz" else open(p) as f:
                return [r for line in f if (r := _json_line(line)) is not None]
        except FileNotFoundError:
            continue
    return []


def _json_line(line: str) -> dict | None:
    try:
        return json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None


class RunInUse(SigpropError):
    """Another live process holds the run folder's lock (the message names it)."""


class RunLock:
    """Exclusive hold on a run folder while one process writes it: `fcntl.flock` on `<run>/.lock`.

    The kernel drops a flock when its holder dies (kill -9 included), so a stale `.lock` naming a dead pid
    is simply taken over; a live holder makes the second writer stop with a one-line error naming it.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise SigpropError(f"run directory {str(self.folder)!r} is a file; accepted: a directory path")
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(os.pread(fd, 4096, 0))
                os.close(fd)
                raise RunInUse(
                    f"run directory {str(self.folder)!r} is in use by {holder}; wait for it to finish, stop it, "
                    "or pick another --out"
                ) from None
            try:  # a holder that just finished unlinks the file: only a lock on the file still there counts
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:200],
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before the unlock, so no waiter locks a file about to vanish
            os.close(self._fd)
            self._fd = None


def held_by(folder: str | Path) -> str | None:
    """Who holds a run folder's lock right now ('process 1234 (...)'), or None: a probe that never creates the
    lock file and holds a shared lock for an instant only."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return _lock_holder(os.pread(fd, 4096, 0))
    finally:
        os.close(fd)


def _lock_holder(raw: bytes) -> str:
    """'process 1234 (sigprop train ..., on host, since ...)' from a lock file's contents."""
    try:
        h = json.loads(raw.decode())
        return f"process {h['pid']} ({h['command']!r} on {h['host']}, since {h['since']})"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another process"


class RunDir:
    """One run's folder. `RunDir.open(path, resume=..., overwrite=...)` enforces "never overwrite silently"."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path, resume: bool = False, overwrite: bool = False) -> RunDir:
        """A fresh run dir, or an existing one to resume. Starting into a non-empty dir needs a flag;
        a run that never took a step (a start that crashed during set-up) does not count."""
        run = cls(path)
        if resume and overwrite:
            raise SigpropError("--resume and --overwrite exclude each other; accepted: one of them")
        if run.path.exists() and not run.path.is_dir():
            raise SigpropError(f"run directory {str(run.path)!r} is a file; accepted: a directory path")
        exists = bool(run.contents())
        if resume:
            if not exists or not (run.path / CONFIG).exists():
                raise SigpropError(f"nothing to resume in {str(run.path)!r} (no {CONFIG}); start it without --resume")
            run.unpack()
            return run
        if exists:
            if not (overwrite or run.never_stepped()):
                raise SigpropError(
                    f"run directory {str(run.path)!r} is not empty; pass --resume to continue it or --overwrite to replace it"
                )
            run.clear()
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    def contents(self) -> list[str]:
        """Names in the folder, the lock file aside."""
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK) if self.path.is_dir() else []

    def never_stepped(self) -> bool:
        """Only set-up files of a start that took no step (no checkpoint, no metrics; step-0 probes at most)."""
        ours = {CONFIG, ENV, METRICS, PROBES, SUMMARY, CHECKPOINT.parts[0], *PACKED, *TRACKERS}
        return (set(self.contents()) <= ours and not self.checkpoint.exists() and not read_jsonl(self.path / METRICS)
                and not any(step > 0 for step in self.kept()))

    def pack(self) -> int:
        """Gzip metrics.jsonl and probes.jsonl into their .gz twins (byte-reproducible: no timestamp inside), for
        records committed beside a figure: JSON lines shrink ~10x. Readers see no difference. Returns bytes saved."""
        saved = 0
        for name in LOGS:
            plain = self.path / name
            if plain.exists():
                raw = plain.read_bytes()
                data = gzip.compress(raw, compresslevel=9, mtime=0)
                atomic_write_bytes(packed(plain), data)  # the twin first: a reader always finds one of them
                plain.unlink()
                saved += len(raw) - len(data)
        return saved

    def unpack(self) -> None:
        """The inverse of `pack`, before a run appends to its records again (a resume)."""
        for name in LOGS:
            plain, gz = self.path / name, packed(self.path / name)
            if gz.exists():
                if not plain.exists():
                    atomic_write_bytes(plain, gzip.decompress(gz.read_bytes()))
                gz.unlink()

    def truncate(self, step: int) -> int:
        """Cut metrics and probes back to what a resume from `step` keeps (records of steps <= step; none
        at step 0, whose probes are taken again), so no step is recorded twice. Returns the lines dropped."""
        dropped = 0
        for name in (METRICS, PROBES):
            p = self.path / name
            if not p.exists():
                continue
            lines = p.read_bytes().splitlines(keepends=True)
            keep = [ln for ln in lines if step > 0 and (at := _step_of(ln)) is not None and at <= step]
            dropped += len(lines) - len(keep)
            if len(keep) != len(lines):
                atomic_write_bytes(p, b"".join(keep))
        return dropped

    def clear(self) -> None:
        """Remove the files a run writes (only those: anything else in the folder is left alone)."""
        for name in (CONFIG, ENV, METRICS, PROBES, SUMMARY, *PACKED):
            (self.path / name).unlink(missing_ok=True)
        ck = self.path / CHECKPOINT
        ck.unlink(missing_ok=True)
        self.drop_kept(after=-1)
        for name in TRACKERS:  # a tracker's view of the records being replaced
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)
        for leftover in list(self.path.glob("**/.*.tmp")):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        if ck.parent.exists() and not any(ck.parent.iterdir()):
            ck.parent.rmdir()
        others = self.contents()
        if others:
            raise SigpropError(
                f"--overwrite would delete files sigprop did not write in {str(self.path)!r} ({', '.join(others[:3])}); "
                "accepted: a run directory or an empty one"
            )

    # -- files ------------------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def name(self) -> str:
        return self.path.name

    def kept_path(self, step: int) -> Path:
        """Where the kept snapshot of `step` lies (checkpoints/step-0000100)."""
        return self.path / CHECKPOINT.parent / KEPT.format(step)

    def kept(self) -> dict[int, Path]:
        """The kept weight snapshots, {step: folder}, by step."""
        found = {}
        for p in (self.path / CHECKPOINT.parent).glob("step-*"):
            if (m := _KEPT_RE.fullmatch(p.name)) and p.is_dir():
                found[int(m.group(1))] = p
        return dict(sorted(found.items()))

    def drop_kept(self, after: int) -> None:
        """Remove the kept snapshots past step `after` (a resume replays those steps and writes them again)."""
        for step, p in self.kept().items():
            if step > after:
                shutil.rmtree(p)

    def write_json(self, name: str, obj: object) -> None:
        atomic_write_json(self.path / name, obj)

    def read_json(self, name: str) -> dict:
        return read_json(self.path / name)

    def has(self, name: str) -> bool:
        return (self.path / name).exists() or (name in LOGS and packed(self.path / name).exists())

    def append(self, name: str, rows: list[dict] | dict) -> None:
        """Append JSON lines and flush them to disk at once (append-only log)."""
        rows = [rows] if isinstance(rows, dict) else rows
        if not rows:
            return
        with naming(self.path / name), open(self.path / name, "a") as f:
            f.write("".join(dumps(r) + "\n" for r in rows))
            f.flush()

    def metrics(self) -> pd.DataFrame:
        return _dedupe(pd.DataFrame(read_jsonl(self.path / METRICS)), ["step"])

    def probes(self) -> pd.DataFrame:
        return _dedupe(pd.DataFrame(read_jsonl(self.path / PROBES)), PROBE_KEY)

    def summary(self) -> dict | None:
        return self.read_json(SUMMARY) if self.has(SUMMARY) else None


PROBE_KEY = ["step", "source", "layer", "module", "metric", "head"]


def _dedupe(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Keep the last record of each key (steps replayed after a crash + --resume)."""
    if frame.empty:
        return frame
    key = [k for k in key if k in frame.columns]
    return frame.drop_duplicates(subset=key, keep="last").sort_values(key, kind="stable").reset_index(drop=True)


def _flatten(prefix: str, obj: dict) -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(key + ".", v))
        else:
            out[key] = v if not isinstance(v, list) else ",".join(map(str, v))
    return out


@dataclass
class Runs:
    """Tidy frames of many runs; every frame has a `run` column (the folder name)."""

    metrics: pd.DataFrame
    probes: pd.DataFrame
    configs: pd.DataFrame
    summaries: pd.DataFrame
    paths: dict[str, Path]

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"Runs({', '.join(self.paths)}: {len(self.metrics)} metric rows, {len(self.probes)} probe rows)"


def load_runs(*patterns: str | Path) -> Runs:
    """`load_runs("runs/*")`: every run dir matching the glob(s) -> Runs(metrics, probes, configs, summaries)."""
    paths: dict[str, Path] = {}
    for pattern in patterns or ("runs/*",):
        hits = sorted(glob.glob(str(pattern)))
        for h in hits:
            p = Path(h)
            if (p / CONFIG).exists():
                name = p.name if p.name not in paths else str(p)
                paths[name] = p
    if not paths:
        raise SigpropError(f"no run directories (with {CONFIG}) match {', '.join(map(str, patterns or ('runs/*',)))}")
    metrics, probes, configs, summaries = [], [], [], []
    for name, p in paths.items():
        run = RunDir(p)
        cfg = run.read_json(CONFIG)
        configs.append({"run": name, **_flatten("", cfg)})
        for frame, bucket in ((run.metrics(), metrics), (run.probes(), probes)):
            if not frame.empty:
                bucket.append(frame.assign(run=name, block=cfg.get("block")))
        s = run.summary()
        if s is not None:
            summaries.append({"run": name, **s})

    def cat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        if not frames:
            return pd.DataFrame(columns=["run"])
        out = pd.concat(frames, ignore_index=True)
        return out[["run", *[c for c in out.columns if c != "run"]]]

    return Runs(cat(metrics), cat(probes), pd.DataFrame(configs), pd.DataFrame(summaries), paths)
