"""Run records that are committed beside a gallery figure: small, complete for every figure, never checkpoints.

A finished run keeps config.json, env.json, summary.json and probes.jsonl as written; its metrics.jsonl is
thinned to every `every`-th step plus every row with an eval loss and the last step (what the loss, catch-up
and runtime figures read). Thinning happens once, atomically, and is recorded in summary.json
(`metrics_thinned_every`), so a thinned run is never thinned again or mistaken for a full one. `compact`
thins and then packs both JSON-lines files into .gz twins (`RunDir.pack`, ~10x smaller, read transparently):
what a gallery commits.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sigprop.errors import SigpropError
from sigprop.runs import (CONFIG, ENV, METRICS, PACKED, PROBES, SUMMARY, RunDir, RunInUse, RunLock, atomic_write_bytes,
                          atomic_write_json, read_jsonl)

#: Statuses of a run that will not change by training again (a diverged run diverges again, deterministically).
FINISHED = ("done", "diverged")

#: the committed gallery: figures/ beside the sigprop package in a checkout (absent when sigprop is pip-installed)
GALLERY = Path(__file__).resolve().parents[2] / "figures"


def gallery() -> Path:
    """The checkout's figures/ folder, wherever the command runs from; a one-line error outside a checkout."""
    if not GALLERY.is_dir():
        raise SigpropError(f"no gallery: sigprop runs from {GALLERY.parent}, not a checkout with figures/; "
                           f"accepted: a checkout of sigprop, or --out/--runs naming a folder of figures and runs")
    return GALLERY


def shown(path: Path) -> str:
    """A path as a command line would name it: relative to the checkout when inside it (figures/fig2), else as given."""
    try:
        return Path(path).resolve().relative_to(GALLERY.parent).as_posix()
    except ValueError:
        return str(path)


def thin_metrics(path: str | Path, every: int = 10) -> int:
    """Thin a finished run's metrics.jsonl in place; returns the number of lines kept (0 = nothing to do)."""
    if not isinstance(every, int) or every < 1:
        raise SigpropError(f"thinning interval must be an integer >= 1, got {every!r}")
    run = RunDir(Path(path))
    summary = run.summary()
    if summary is None or summary.get("status") not in FINISHED:
        raise SigpropError(f"run {str(path)!r} is not finished; accepted: a run whose summary.json says done or diverged")
    if summary.get("metrics_thinned_every") or every == 1:
        return 0
    rows = read_jsonl(run.path / METRICS)
    last = {}
    for r in rows:  # a resumed run may hold a step twice: keep its last record
        last[r["step"]] = r
    final = max(last) if last else 0
    keep = [r for s, r in sorted(last.items()) if s % every == 0 or r.get("eval_loss") is not None or s == final]
    atomic_write_bytes(run.path / METRICS, "".join(json.dumps(r) + "\n" for r in keep).encode())
    atomic_write_json(run.path / SUMMARY, {**summary, "metrics_thinned_every": every})
    return len(keep)


def compact(path: str | Path, every: int = 10) -> bool:
    """Thin a finished run's metrics (`thin_metrics`) and pack its records, holding the run's lock (a run another
    process holds is left as it is); True if anything changed."""
    try:
        with RunLock(path):
            thinned = thin_metrics(path, every) > 0
            return RunDir(Path(path)).pack() > 0 or thinned
    except RunInUse:
        return False


#: a finished run's final checkpoint analysed, where a recipe keeps one (the checkpoint is never committed; fig7):
#: sigprop analyze --run RUN --attention --outliers --no-theory --format csv > RUN/final_analysis.csv
FINAL_ANALYSIS = "final_analysis.csv"
#: the files that make a run's record (what a gallery commits, and what is shared between recipes)
RECORDS = (CONFIG, ENV, METRICS, PROBES, SUMMARY, *PACKED, FINAL_ANALYSIS)


def find_shared(folder: str, search: list[Path]) -> Path | None:
    """A finished run with this run's id (the hash after the slug, which fixes its whole config) in one of the
    `search` folders, e.g. another gallery figure's runs/: recipes share a run instead of training it twice."""
    rid = folder.rsplit("-", 1)[-1]
    for d in search:
        for cand in sorted(Path(d).glob(f"*-{rid}")):
            summary = RunDir(cand).summary() if (cand / CONFIG).exists() else None
            if summary is not None and summary.get("status") in FINISHED:
                return cand
    return None


def copy_records(src: Path, dst: Path) -> None:
    """Copy a finished run's records (never its checkpoints) into a new run folder, summary last (it marks the
    run finished, so a copy cut short is never taken for a finished run)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(RECORDS, key=lambda n: n == SUMMARY):
        if (src / name).exists():
            atomic_write_bytes(dst / name, (src / name).read_bytes())


def overlap(a: str | Path, b: str | Path) -> float:
    """The fraction of the shorter of two finished runs' wall time during which both trained: ~1 for runs made side
    by side (their tokens/s compare, as the machine's load was shared), 0 for runs made one after the other or
    resumed in several sessions (whose load is unknown)."""
    spans = []
    for path in (Path(a), Path(b)):
        run = RunDir(path)
        env, summary = run.read_json(ENV) if run.has(ENV) else {}, run.summary() or {}
        if len(env.get("sessions", [])) != 1 or "started" not in env or not summary.get("wall_time_s"):
            return 0.0
        start = datetime.strptime(env["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        spans.append((start, start + float(summary["wall_time_s"])))
    (a0, a1), (b0, b1) = spans
    return max(0.0, min(a1, b1) - max(a0, b0)) / min(a1 - a0, b1 - b0)

