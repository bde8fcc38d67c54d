"""`sweep`: any metric of `analyze` over a grid of blocks, widths, depths, seeds and knob values.

    s = sp.sweep(["pre-ln", "sas"], widths=[64, 256, 1024], seeds=4, grid={"beta_ff": [0.05, 0.1]})
    s.df              # tidy: block, width, depth, seed, beta_ff, layer, metric, value, source
    s.bands()         # mean and std over seeds per (sweep variables, layer, metric, source)
    s.convergence()   # |measured - theory| per layer against width, with the fitted log-log slope
    s.save(out)       # sweep.csv, bands.csv, convergence.csv; band figures (mean +- std, theory dashed), convergence

Every grid point is one `analyze` call (one block, one width, depth and seed, one set of knob values),
cached as a CSV under `out/points/` keyed by its settings, so an interrupted sweep resumes where it stopped.
Points run in spawned worker processes with `workers=None` (one per free core; the CLI default) or `workers=n`,
or as one cluster job each with `launcher=Launcher("slurm", ...)` (`sigprop.training.cluster`; `sigprop sweep --launcher slurm`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sigprop.blocks import get_spec
from sigprop.blocks.spec import parse_set
from sigprop.errors import SigpropError, check_choice, check_positive
from sigprop.runs import RunLock, atomic_write_bytes, atomic_write_json
from sigprop.studies.analysis import DATA_SOURCES, analyze, input_tokens, resolve_blocks
from sigprop.studies.coord import CoordCheck, coord_point
from sigprop.training.cluster import Launcher, run_jobs

#: The sweep variables, in column order (knob columns follow).
AXES = ("block", "width", "depth", "seed")
#: Bump when a point's rows change meaning, so stale cached points are recomputed.
POINT_VERSION = 1
#: How init_std follows the width: "fixed" keeps the spec's std (paper: 0.02 at every width), so a branch's
#: share of the stream grows with d; "fan-in" scales it as std * sqrt(REF_WIDTH / d), the paper's init at
#: d = 768 and the same infinite-width kernel map at every width (neural-tangents' standard parametrisation).
INIT_SCALINGS = ("fixed", "fan-in")
REF_WIDTH = 768


@dataclass(frozen=True)
class Point:
    """One grid point: everything `analyze` needs besides the shared settings."""

    block: str
    width: int
    depth: int
    seed: int
    knobs: tuple[tuple[str, object], ...] = ()

    def sets(self) -> list[str]:
        return [f"{k}={knob_text(v)}" for k, v in self.knobs]


def knob_text(value: object) -> str:
    """A knob value as `--set` writes it (tuples such as `trainable` comma-joined)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class Settings:
    """What every point of a sweep shares (the probe batch and model shape apart from width and depth)."""

    heads: int = 4
    seq_len: int = 128
    batch: int = 4
    data: str = "code"
    vocab_size: int = 8192
    kind: str = "decoder"
    dtype: str = "float32"
    theory: bool = True
    max_bytes: int | None = None
    init: str = "fixed"
    coord_steps: int = 0  # > 0: a coordinate check (activation RMS over training steps) instead of analyze
    lr: float = 1e-3  # the coordinate check's AdamW learning rate (paper: 1e-3)


def point_key(point: Point, settings: Settings) -> str:
    """A short stable id of a point's settings (its cache file name)."""
    blob = json.dumps({"v": POINT_VERSION, "point": asdict(point), "settings": asdict(settings)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def point_sets(point: Point, settings: Settings) -> list[str]:
    """The point's knob overrides, plus init_std when it follows the width (init='fan-in')."""
    sets = point.sets()
    if settings.init == "fan-in":
        std = get_spec(point.block, sets).init_std * math.sqrt(REF_WIDTH / point.width)
        sets.append(f"init_std={std!r}")
    return sets


def run_point(point: Point, settings: Settings, cache_dir: str | None = None) -> pd.DataFrame:
    """Analyze one grid point (or run its coordinate check): tidy rows tagged with the sweep variables."""
    import torch

    torch.set_num_threads(1)  # one process per core; threads inside would only fight each other
    knobs = {k: knob_text(v) if isinstance(v, tuple) else v for k, v in point.knobs}
    tags = {"block": point.block, "width": point.width, "depth": point.depth, "seed": point.seed, **knobs}
    sets = point_sets(point, settings)
    if settings.coord_steps:
        df = coord_point(point.block, sets, point.width, point.depth, point.seed, settings, cache_dir)
        return df.assign(**tags)[[*tags, "step", "point", "layer", "metric", "value"]]
    a = analyze(point.block, depth=point.depth, width=point.width, heads=settings.heads, seq_len=settings.seq_len,
                batch=settings.batch, seed=point.seed, data=settings.data, vocab_size=settings.vocab_size,
                sets=sets, theory=settings.theory, dtype=settings.dtype, kind=settings.kind, kernels=False,
                cache_dir=cache_dir, max_bytes=settings.max_bytes, progress=False)
    df = a.metrics.drop(columns="block")
    return df.assign(**tags)[[*tags, "layer", "metric", "value", "source"]]


def _cached_point(point: Point, settings: Settings, folder: Path | None, cache_dir: str | None) -> pd.DataFrame:
    """run_point, read from / written to folder/<key>.csv when a folder is given."""
    path = folder / f"{point_key(point, settings)}.csv" if folder is not None else None
    if path is not None and path.exists():
        return pd.read_csv(path)
    df = run_point(point, settings, cache_dir)
    if path is not None:
        atomic_write_bytes(path, df.to_csv(index=False).encode())
    return df


def parse_grid(sets: Iterable[str]) -> dict[str, list[object]]:
    """['beta_ff=0.05,0.1', 'norm=layer'] -> {'beta_ff': [0.05, 0.1], 'norm': ['layer']}.

    A comma separates values, except for `trainable` (whose value is itself a comma list)."""
    grid: dict[str, list[object]] = {}
    for s in sets:
        if "=" not in s:
            raise SigpropError(f"bad --set {s!r}; expected knob=value[,value...], e.g. beta_ff=0.05,0.1")
        k, v = s.split("=", 1)
        values = [v] if k.strip() == "trainable" else [t for t in v.split(",") if t.strip()]
        if not values:
            raise SigpropError(f"--set {s!r} gives no value")
        parsed = [parse_set(f"{k}={t}") for t in values]
        grid[parsed[0][0]] = [p[1] for p in parsed]
    return grid


def coerce_grid(grid: Mapping[str, Sequence[object]]) -> dict[str, list[object]]:
    """API grids read like CLI ones: {"beta_ff": ["0.1", 0.2]} -> {"beta_ff": [0.1, 0.2]} (bad names/values: one-line errors)."""
    out: dict[str, list[object]] = {}
    for k, vals in grid.items():
        parsed = [parse_set(f"{k}={knob_text(v)}") for v in vals]
        if not parsed:
            raise SigpropError(f"grid knob {k!r} has no values")
        out[parsed[0][0]] = [p[1] for p in parsed]
    return out


def grid_points(blocks: Sequence[str], widths: Sequence[int], depths: Sequence[int], seeds: Sequence[int],
                grid: Mapping[str, Sequence[object]]) -> list[Point]:
    """The full product of the sweep variables, seeds innermost."""
    knob_values = [[(k, v) for v in vals] for k, vals in grid.items()]
    combos = itertools.product(blocks, widths, depths, itertools.product(*knob_values), seeds)
    return [Point(b, w, d, s, tuple(kv)) for b, w, d, kv, s in combos]


def default_workers(points: int) -> int:
    """One worker per core this process may use (sched affinity), never more than there are points."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, points))


@dataclass(repr=False)
class Sweep:
    """The result of `sweep`: the tidy rows of every point and the grid that made them."""

    df: pd.DataFrame
    variables: list[str]  # sweep variables (columns), e.g. block, width, depth, seed, beta_ff
    settings: Settings
    knobs: list[str] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        """Sweep variables except the seed: what a band is drawn per."""
        return [v for v in self.variables if v != "seed"]

    def bands(self) -> pd.DataFrame:
        """Mean, std and count over seeds for every (sweep variables, layer, metric, source)."""
        keys = [*self.groups, "layer", "metric", "source"]
        g = self.df.groupby(keys, dropna=False, sort=False)["value"]
        out = g.agg(mean="mean", std="std", seeds="count").reset_index()
        out["std"] = out["std"].fillna(0.0)
        return out

    def convergence(self, metric: str = "cos_mean") -> pd.DataFrame:
        """|measured - theory| per layer and seed, from `convergence_table`."""
        return convergence_table(self.df, metric, [g for g in self.groups if g != "width"])

    def slopes(self, metric: str = "cos_mean") -> pd.DataFrame:
        """The fitted log-log slope of the mean gap against width, per block (and other sweep variable)."""
        return fit_slopes(self.convergence(metric), [g for g in self.groups if g != "width"])

    def scale_text(self) -> str:
        s = self.settings
        seeds = self.df.seed.nunique()
        init = "init std 0.02 at every width" if s.init == "fixed" else f"init std 0.02·√({REF_WIDTH}/d)"
        return (f"at init · H={s.heads}, T={s.seq_len}, batch {s.batch}, data {s.data}, {s.dtype}, {init}, "
                f"{seeds} seed{'s' if seeds > 1 else ''} per point (band: mean ± std)")

    @property
    def has_theory(self) -> bool:
        return bool((self.df.source == "theory").any()) and self.df.width.nunique() > 1

    def figures(self, metrics: Sequence[str] = ("cos_mean", "eff_rank")) -> dict:
        """{name: figure}: bands per metric, and the convergence figure when theory spans several widths."""
        from sigprop.plots.sweep import band_figure, convergence_figure

        figs = {f"bands_{m}": band_figure(self.bands(), m, self.groups, note=self.scale_text()) for m in metrics}
        if self.has_theory:
            figs["convergence"] = convergence_figure(self.convergence(), self.slopes(), note=self.scale_text())
        return figs

    def save(self, out: str | Path, metrics: Sequence[str] = ("cos_mean", "eff_rank")) -> list[Path]:
        """Write sweep.csv (all rows), bands.csv, convergence.csv and the figures into `out`."""
        from sigprop.plots import savefig

        out = Path(out)
        tables = {"sweep.csv": self.df, "bands.csv": self.bands()}
        if self.has_theory:
            tables["convergence.csv"] = self.convergence().merge(self.slopes(), how="left")
        paths = []
        for name, table in tables.items():
            paths.append(out / name)
            atomic_write_bytes(paths[-1], table.to_csv(index=False).encode())
        for name, fig in self.figures(metrics).items():
            paths += savefig(fig, out / name)
        return paths

    def __repr__(self) -> str:
        n = len(self.df.drop_duplicates(self.variables))
        return f"Sweep({n} points over {', '.join(self.variables)}; {self.scale_text()})"


def convergence_table(df: pd.DataFrame, metric: str = "cos_mean", by: Sequence[str] = ("block",)) -> pd.DataFrame:
    """Per (by, width, seed, layer >= 1): gap = |measured - theory| of `metric`."""
    keys = [*by, "width", "seed", "layer"]
    d = df[df.metric == metric]
    wide = d.pivot_table(index=keys, columns="source", values="value", dropna=False).reset_index()
    if "theory" not in wide:
        raise SigpropError("this sweep has no theory rows; run it with theory on to check convergence")
    wide = wide[wide.layer >= 1]
    wide["gap"] = (wide["measured"] - wide["theory"]).abs()
    return wide[[*keys, "measured", "theory", "gap"]].reset_index(drop=True)


def fit_slopes(conv: pd.DataFrame, by: Sequence[str] = ("block",)) -> pd.DataFrame:
    """Least-squares slope of log(mean gap) on log(width), and the seed spread of the gap at each end.

    The mean gap per width averages over layers and seeds; the spread is the std over seeds of the
    per-seed (layer-averaged) gap, relative to its mean."""
    rows = []
    by = list(by)
    for key, g in conv.groupby(by, sort=False) if by else [((), conv)]:
        per_seed = g.groupby(["width", "seed"])["gap"].mean().reset_index()
        stats = per_seed.groupby("width")["gap"].agg(["mean", "std"]).reset_index()
        ok = stats["mean"] > 0
        slope = float(np.polyfit(np.log(stats.width[ok]), np.log(stats["mean"][ok]), 1)[0]) if ok.sum() >= 2 else float("nan")
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "slope": slope, "gap_min_width": float(stats["mean"].iloc[0]),
                     "gap_max_width": float(stats["mean"].iloc[-1]),
                     "seed_spread": float((stats["std"].fillna(0) / stats["mean"].where(ok)).mean())})
    return pd.DataFrame(rows)


def _as_list(x: int | Sequence[int]) -> list[int]:
    return [x] if isinstance(x, int) else list(x)


def sweep(
    blocks: str | Sequence[str] = ("pre-ln", "sas"),
    *,
    widths: int | Sequence[int] = (64, 256, 1024),
    depths: int | Sequence[int] = 12,
    seeds: int | Sequence[int] = 4,
    grid: Mapping[str, Sequence[object]] | Sequence[str] = (),
    heads: int = 4,
    seq_len: int = 128,
    batch: int = 4,
    data: str = "code",
    vocab_size: int = 8192,
    kind: str = "decoder",
    dtype: str = "float32",
    theory: bool = True,
    init: str = "fixed",
    coord_steps: int = 0,
    lr: float = 1e-3,
    out: str | Path | None = None,
    workers: int | None = 1,
    cache_dir: str | None = None,
    max_bytes: int | None = None,
    progress: bool = True,
    launcher: Launcher | None = None,
    dry_run: bool = False,
) -> Sweep:  # or a CoordCheck when coord_steps > 0; a list of jobs with dry_run
    """Analyze every point of blocks x widths x depths x knob values x seeds; cache points under out/points.

    seeds: a count (seeds 0..n-1) or explicit seeds. grid: {knob: values} or CLI-style ["beta_ff=0.05,0.1"].
    init: "fixed" or "fan-in" (see INIT_SCALINGS); use "fan-in" to see the theory gap shrink as d^-1/2.
    coord_steps > 0 runs a coordinate check instead (`sigprop.studies.coord`): returns a CoordCheck.
    workers: processes for the points (None = one per free core; `sigprop sweep` uses that). Workers are
    spawned, so a script that asks for more than one must call sweep under `if __name__ == "__main__":`.
    launcher: submit the points not cached yet as one job each (slurm, local-submitit) and wait for them; needs `out`
    (the jobs write their points there), which the run lock (`runs.RunLock`) holds meanwhile. dry_run: compute
    nothing; return [(point, cache file)] of the points that would run.
    """
    if launcher is not None and launcher.submits and out is None:
        raise SigpropError(f"--launcher {launcher.kind} needs out= (--out): the jobs write their points there")
    names = [s.name for s in resolve_blocks(blocks if isinstance(blocks, str) else list(blocks))]
    widths, depths = _as_list(widths), _as_list(depths)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    check_choice("data", data, DATA_SOURCES)
    check_choice("init scaling", init, INIT_SCALINGS)
    for what, values in (("width", widths), ("depth", depths)):
        for v in values:
            check_positive(what, v)
    if isinstance(seeds, int):
        check_positive("seeds", seeds)
    if not widths or not depths or not seed_list:
        raise SigpropError("a sweep needs at least one width, depth and seed")
    for w in widths:
        if w % heads:
            raise SigpropError(f"width {w} is not divisible by heads {heads}; choose --heads that divides every width")
    if coord_steps < 0:
        raise SigpropError(f"coord steps must be >= 0, got {coord_steps}")
    grid = coerce_grid(grid) if isinstance(grid, Mapping) else parse_grid(grid)
    if init == "fan-in" and "init_std" in grid:
        raise SigpropError("init='fan-in' sets init_std per width; sweep init_std with init='fixed' instead")
    for name in names:  # build every spec once here, so a bad knob value fails now, not in a worker
        for kv in itertools.product(*[[(k, v) for v in vals] for k, vals in grid.items()]):
            get_spec(name, Point(name, 1, 1, 0, tuple(kv)).sets())
    settings = Settings(heads=heads, seq_len=seq_len, batch=batch, data=data, vocab_size=vocab_size, kind=kind,
                        dtype=dtype, theory=theory, max_bytes=max_bytes, init=init, coord_steps=coord_steps, lr=lr)
    points = grid_points(names, widths, depths, seed_list, grid)
    if dry_run:
        folder = Path(out) / "points" if out is not None else None
        return [(_label(p), str(folder / f"{point_key(p, settings)}.csv") if folder is not None else "-") for p in points
                if folder is None or not (folder / f"{point_key(p, settings)}.csv").exists()]
    folder = None
    if out is not None:
        folder = Path(out) / "points"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / "sweep.json", {"blocks": names, "widths": widths, "depths": depths, "seeds": seed_list,
                                                     "grid": grid, "settings": asdict(settings)})
    if data == "code":  # build the corpus cache once here, not in every worker at the same time
        input_tokens(data, 1, seq_len, vocab_size, 0, cache_dir, progress, max_bytes)
    if launcher is not None and launcher.submits:
        with RunLock(out):  # one writer per sweep folder, as per run folder
            frames = _run_points(points, settings, folder, cache_dir, 1, progress, launcher)
    else:
        frames = _run_points(points, settings, folder, cache_dir, workers or default_workers(len(points)), progress)
    df = pd.concat(frames, ignore_index=True)
    if coord_steps:
        return CoordCheck(df=df, variables=[*AXES, *grid], settings=settings)
    return Sweep(df=df, variables=[*AXES, *grid], settings=settings, knobs=list(grid))


def _run_points(points: list[Point], settings: Settings, folder: Path | None, cache_dir: str | None, workers: int,
                progress: bool, launcher: Launcher | None = None) -> list[pd.DataFrame]:
    """Every point's rows in grid order; cached points are read, the rest run (in a pool when workers > 1, as cluster
    jobs with a submitting launcher)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    results: dict[int, pd.DataFrame] = {}
    todo = []
    for i, p in enumerate(points):
        path = folder / f"{point_key(p, settings)}.csv" if folder is not None else None
        if path is not None and path.exists():
            results[i] = pd.read_csv(path)
        else:
            todo.append(i)
    if launcher is not None and launcher.submits and todo:
        say = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
        done = run_jobs(launcher, _cached_point, [(points[i], settings, folder, cache_dir) for i in todo],
                        [_label(points[i]) for i in todo], folder.parent / "submitit", "sigprop-sweep", say=say)
        results.update(zip(todo, done))
        todo = []
    bar = Progress(TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=True)
    with bar:
        task = bar.add_task("sweep", total=len(points), completed=len(results), last=f"{len(results)} cached" if results else "")
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                results[i] = _cached_point(points[i], settings, folder, cache_dir)
                bar.update(task, advance=1, last=_label(points[i]))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_cached_point, points[i], settings, folder, cache_dir): i for i in todo}
                for f in as_completed(futures):
                    i = futures[f]
                    results[i] = f.result()
                    bar.update(task, advance=1, last=_label(points[i]))
    return [results[i] for i in range(len(points))]


def _label(p: Point) -> str:
    knobs = " ".join(f"{k}={v}" for k, v in p.knobs)
    return f"{p.block} d={p.width} L={p.depth} seed {p.seed} {knobs}".strip()
