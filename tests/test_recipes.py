"""Recipes at the ci scale: `reproduce --list`, every recipe from real runs (non-empty PNG/PDF + result.json),
reuse of finished runs (no retraining) and resumption of unfinished ones, one-line errors for bad input,
and the plotting layer on real run frames."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sigprop.cli import app
from sigprop.errors import SigpropError
from sigprop.recipes import RECIPES, get_recipe, reproduce
from sigprop.recipes.base import CI, run_id
from sigprop.runs import RunDir, load_runs

CLI = CliRunner()


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """One tiny corpus cache (the ci scale's 1 MB, V=512, T=32) shared by every test here."""
    from sigprop.data import load_data

    root = tmp_path_factory.mktemp("recipe-cache")
    load_data("code", vocab_size=CI.vocab_size, seq_len=CI.seq_len, cache_dir=root, progress=False, max_bytes=CI.max_bytes)
    return root


@pytest.fixture(scope="session")
def pool(tmp_path_factory) -> Path:
    """One runs folder shared by all recipes, as in the gallery: recipes that need the same run share it."""
    return tmp_path_factory.mktemp("recipe-runs")


@pytest.fixture(scope="session")
def results(tmp_path_factory, cache, pool) -> dict:
    """Every recipe once at the ci scale (module-level so the whole suite pays for it once)."""
    out = tmp_path_factory.mktemp("recipe-out")
    return {name: reproduce(name, "ci", out / name, runs_dir=pool, cache_dir=cache, quiet=True) for name in RECIPES}


def test_list_shows_every_recipe_with_paper_counterpart_and_runtime(monkeypatch):
    from sigprop.cli.app import console

    monkeypatch.setattr(console, "width", 320)  # one line per recipe, so each runtime appears unwrapped
    res = CLI.invoke(app, ["reproduce", "--list"])
    assert res.exit_code == 0, res.output
    for r in RECIPES.values():
        assert r.name in res.output and r.paper in res.output
        assert r.runtime["cpu" if "cpu" in r.scales else "gpu"] in res.output
    assert {"fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig12", "fig13", "fig14", "fig17", "fig25", "table1",
            "rank-collapse", "cos-training"} <= set(RECIPES)


def test_list_is_readable_at_80_columns():
    """Issue 26: at 80 columns no cell is cut with an ellipsis, no column is empty, no line is wider than the terminal."""
    from rich.console import Console

    from sigprop.cli.reproduce import recipe_table

    console = Console(width=80, record=True, file=io.StringIO())
    table = recipe_table()
    console.print(table)
    text = console.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    words = set(text.replace("│", " ").split())
    for r in RECIPES.values():  # every word of every cell is shown whole (a squeezed column shows none)
        cells = [r.name, r.paper, r.shows, *(r.runtime.get(s, "") for s in r.scales), ", ".join(map(str, r.claims))]
        assert set(" ".join(cells).split()) <= words, (r.name, set(" ".join(cells).split()) - words)
    first = [ln.split("│")[1].strip() for ln in text.splitlines() if ln.startswith("│")]
    assert [r.name for r in RECIPES.values()] == [c for c in first if c in RECIPES]  # every recipe, in gallery order


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_runs_at_ci_scale(results, name):
    res = results[name]
    pngs = [f for f in res.files if f.suffix == ".png"]
    pdfs = [f for f in res.files if f.suffix == ".pdf"]
    assert pngs and len(pngs) == len(pdfs)
    for f in pngs + pdfs:
        assert f.stat().st_size > 5_000, f  # a real figure, not an empty canvas
    r = json.loads((res.out / "result.json").read_text())
    recipe = RECIPES[name]
    assert r["recipe"] == name and r["paper"] == recipe.paper and r["scale"] == "ci"
    tested = {c["claim"] for c in r["claims"]}
    assert tested <= set(recipe.claims) and (tested or not recipe.claims)  # ci may run a subset of the blocks
    for c in r["claims"]:  # ci runs test the pipeline: nothing is decided there, the outcome is kept beside it
        assert c["verdict"] == "not decidable at ci scale" and c["evidence"]
        assert c["outcome"] in ("reproduced", "not reproduced", "reversed") or c["outcome"].startswith("not decidable (")
    plans = recipe.plans("ci")
    assert [run["slug"] for run in r["runs"]] == [p.slug for p in plans]
    for run, p in zip(r["runs"], plans):  # real runs: finished, with a positive loss from their own summary
        assert run["status"] in ("done", "diverged")
        if run["status"] == "done":
            assert run["final_eval_loss"] > 0 and run["step"] == run["steps"] == p.config(recipe.base["ci"]).steps


def test_result_numbers_come_from_the_runs(results, pool):
    """fig3's deciding numbers are exactly the runs' final eval losses (nothing hard-coded)."""
    r = results["fig3"].result
    runs = load_runs(*[str(pool / run["run"]) for run in r["runs"]])
    s = runs.summaries.set_index("run")
    by_slug = {run["slug"]: run["run"] for run in r["runs"]}
    assert r["numbers"]["pre-ln"][0] == pytest.approx(s.loc[by_slug["pre-ln-s0"], "final_eval_loss"])
    for init in ("identity", "orthogonal"):
        for beta, by_seed in r["numbers"]["final_eval_loss"][init].items():
            run = by_slug[f"reparam-{init}-b{beta}-s0"]
            last_eval = runs.metrics[runs.metrics.run == run].dropna(subset=["eval_loss"]).eval_loss.iloc[-1]
            assert by_seed[0] == pytest.approx(last_eval)
    gap = r["numbers"]["gap_to_pre_ln_pct"]["identity"]["0"]  # the paired gap of claim 4, from the same losses
    ident0 = r["numbers"]["final_eval_loss"]["identity"]["0"][0]
    assert gap["values"] == pytest.approx([100 * (ident0 - r["numbers"]["pre-ln"][0]) / r["numbers"]["pre-ln"][0]])
    # identity beta=0 and orthogonal beta=0 are different models (different W_init), so different losses
    assert r["numbers"]["final_eval_loss"]["identity"]["0"][0] != r["numbers"]["final_eval_loss"]["orthogonal"]["0"][0]


def test_fig8_reads_the_gap_inside_the_long_runs_and_its_trend(results):
    """Claim 14's numbers: the gap inside the 3x runs at their last mark is the 3x final gap (same losses), and the
    1x -> 3x trend is the per-seed change of the gap, judged in its band."""
    from sigprop.recipes.fig8 import trend

    n = results["fig8"].result["numbers"]
    last = str(CI.steps * 3)
    assert n["gap_inside_3x_pct"]["sas"][last]["values"] == pytest.approx(n["gap_to_pre_ln_pct"]["3x"]["sas"]["values"])
    assert set(n["gap_inside_3x_pct"]["sas"]) == {str(CI.steps * k) for k in (1, 2, 3)}
    rank = n["eff_rank_per_layer"]["sas"]  # each layer's stream: the end of 1x, and 3x at every mark, over the seeds
    assert set(rank["1"]) == {f"1x step {CI.steps}"} | {f"3x step {CI.steps * k}" for k in (1, 2, 3)}
    assert all(1 <= mean <= CI.seq_len * CI.batch_size for layer in rank.values() for mean, _ in layer.values())
    base = {0: 4.0, 1: 4.0, 2: 4.0}
    one = {"block": {0: 3.96, 1: 3.96, 2: 3.96}, "base": base}  # -1% at every seed
    assert trend(one, {"block": {0: 3.84, 1: 3.83, 2: 3.85}, "base": base})[0] == "grows"  # ~-4%: gains 3 points
    assert trend(one, {"block": {0: 4.04, 1: 4.05, 2: 4.03}, "base": base})[0] == "shrinks"
    assert trend(one, {"block": {0: 3.95, 1: 3.96, 2: 3.97}, "base": base})[0] == "holds"  # moves inside the 1-point floor
    label, change = trend(one, {"block": {0: 3.97, 1: 3.95, 2: float("nan")}, "base": base})
    assert change.n == 2 and label.startswith("not decidable")  # a diverged seed drops out of the pairing


def test_fig25_needs_a_10x_lower_lr_only_when_the_lowest_grid_lr_wins_beyond_noise():
    from sigprop.recipes.fig25 import INF, lower_lr

    assert lower_lr({4e-3: 5.0, 1.2e-3: 4.8, 4e-4: 4.6}, 4e-3, 1.0)[:2] == ("reproduced", 4e-4)
    assert lower_lr({4e-3: INF, 1.2e-3: 4.6, 4e-4: 4.7}, 4e-3, 1.0)[:2] == ("not reproduced", 1.2e-3)  # ~3x lower suffices
    assert lower_lr({4e-3: 4.62, 1.2e-3: 4.61, 4e-4: 4.60}, 4e-3, 1.0)[0] == "not reproduced"  # 0.4%: inside the band
    ok, best, cost = lower_lr({4e-3: INF, 1.2e-3: INF, 4e-4: 4.7}, 4e-3, 1.0)
    assert (ok, best, cost) == ("reproduced", 4e-4, INF)  # diverging at SAS's LR counts as needing a lower one


def test_gain_trajectories_have_several_points_per_layer(results, pool):
    r = results["fig4"].result
    run = next(x["run"] for x in r["runs"] if x["slug"] == "sas-trainable-vp-s0")
    p = RunDir(pool / run).probes()
    ratio = p[(p.source == "gain") & (p.metric == "beta_v/alpha_v")]
    assert ratio.groupby("layer").step.nunique().min() >= 2
    assert ratio[ratio.step == 0].value.tolist() == pytest.approx([0.2] * CI.depth)  # the Fig. 4 init
    assert set(r["numbers"]["final_ratio"]["beta_p/alpha_p"]) == set(range(1, CI.depth + 1))


def test_shared_runs_are_trained_once(results):
    """pre-ln-s0 is needed by fig2, fig3, fig5, ...: exactly one recipe trained it, the others reused it."""
    pre = {name: res for name, res in results.items() if any(x["slug"] == "pre-ln-s0" for x in res.result["runs"])}
    assert len(pre) >= 5
    folders = {next(x["run"] for x in res.result["runs"] if x["slug"] == "pre-ln-s0") for res in pre.values()}
    assert len(folders) == 1
    trained = [name for name, res in pre.items() if folders & set(res.trained)]
    assert len(trained) == 1


def test_second_invocation_reuses_runs_without_training(results, pool, cache, tmp_path, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    # the package module itself (sigprop/__init__ re-exports the function `train`, which shadows the attribute)
    monkeypatch.setattr(sys.modules["sigprop.training"], "train", no_training)
    before = {p: p.stat().st_mtime_ns for p in pool.glob("*/metrics.jsonl")}
    again = reproduce("fig13", "ci", tmp_path / "fig13", runs_dir=pool, cache_dir=cache, quiet=True)
    assert again.trained == [] and len(again.reused) == len(RECIPES["fig13"].plans("ci"))
    assert {p: p.stat().st_mtime_ns for p in pool.glob("*/metrics.jsonl")} == before
    assert again.result["numbers"] == results["fig13"].result["numbers"]


def test_an_interrupted_run_is_resumed_not_restarted(cache, tmp_path):
    """A run stopped half-way (checkpoint at step 5) continues from there on the next reproduce."""
    from sigprop.training import train

    plan = RECIPES["fig17"].plans("ci")[0]
    cfg = plan.config(CI)
    folder = tmp_path / "runs" / f"{plan.slug}-{run_id(plan.spec, cfg)}"
    half = train(plan.spec, cfg.replace(steps=5), folder, cache_dir=cache, quiet=True)
    assert half.status == "done"
    # make it look like the 10-step run stopped at step 5: same settings, status interrupted
    stored = RunDir(folder).read_json("config.json")
    stored["train"]["steps"] = cfg.steps
    RunDir(folder).write_json("config.json", stored)
    RunDir(folder).write_json("summary.json", {**half.summary, "status": "interrupted", "steps": cfg.steps})
    res = reproduce("fig17", "ci", tmp_path / "out", runs_dir=tmp_path / "runs", cache_dir=cache, quiet=True)
    assert res.trained == [folder.name]
    m = RunDir(folder).metrics()
    assert m.step.tolist() == list(range(1, cfg.steps + 1))
    env = RunDir(folder).read_json("env.json")
    assert [s["from_step"] for s in env["sessions"]] == [0, 5]  # resumed at step 5, not restarted


def test_run_identity_hash_tracks_knobs_and_settings_not_runtime():
    p = RECIPES["fig3"].plans("ci")
    ids = {run_id(x.spec, x.config(CI)) for x in p}
    assert len(ids) == len(p)  # every run of the sweep is a different experiment
    spec = p[0].spec
    assert run_id(spec, CI) == run_id(spec, CI.replace(threads=1, eval_every=3))  # runtime-only fields
    assert run_id(spec, CI) != run_id(spec, CI.replace(lr=3e-4))
    assert run_id(spec, CI) != run_id(spec.replace(beta_ff=0.3), CI)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["reproduce", "fig99", "--scale", "ci"], "unknown recipe 'fig99'; accepted: catch-up, fig2"),
        (["reproduce", "fig3", "--scale", "huge"], "unknown scale 'huge' for recipe fig3; accepted: ci, cpu, paper"),
        (["reproduce"], "no recipe given; accepted: --list, all, catch-up"),
    ],
)
def test_bad_input_is_a_one_line_error(args, needle, tmp_path, monkeypatch, capsys):
    from sigprop.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["sigprop", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_recipe_from_the_shell_is_one_line(tmp_path):
    import subprocess

    res = subprocess.run([sys.executable, "-m", "sigprop", "reproduce", "fig99"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "unknown recipe 'fig99'" in res.stderr, res.stderr


def test_recipe_lookup_and_api_errors():
    assert get_recipe("Fig. 3").name == "fig3" and get_recipe("fig03").name == "fig3"
    assert get_recipe("cos_training").name == "cos-training"
    with pytest.raises(SigpropError, match="unknown recipe 'fig1'"):
        get_recipe("fig1")
    with pytest.raises(SigpropError, match="unknown scale 'gpu'"):
        reproduce("fig2", "gpu")


def test_diverged_run_is_reported_not_retrained(cache, tmp_path, monkeypatch):
    """A run that diverges (lr 1000, no clipping) is recorded as diverged, drawn as such, and not retrained next time."""
    from sigprop.recipes.base import Recipe, plan

    def make(ctx):
        from sigprop.plots.paper import plot_final_vs_knob

        t = ctx.table().assign(x=[1.0])
        plot_final_vs_knob(t, "x", ctx.out / "f", ctx.note())
        return {"numbers": {"status": t.status.tolist()}, "claims": []}

    r = Recipe("boom", "Fig. 0", "a diverging run", (), lambda s: [plan("sas-p-nonorm", lr=1e3, grad_clip=0.0, warmup=0.0)], make, {})
    monkeypatch.setitem(RECIPES, "boom", r)
    res = reproduce("boom", "ci", tmp_path / "o", runs_dir=tmp_path / "r", cache_dir=cache, quiet=True)
    assert res.result["numbers"]["status"] == ["diverged"]
    assert res.result["runs"][0]["final_eval_loss"] != res.result["runs"][0]["final_eval_loss"]  # NaN
    again = reproduce("boom", "ci", tmp_path / "o", runs_dir=tmp_path / "r", cache_dir=cache, quiet=True)
    assert again.trained == [] and again.reused == res.trained


def test_plot_functions_on_real_frames(results, pool, tmp_path):
    from sigprop.plots.paper import Line, gain_frame, plot_cos_heatmap, plot_loss

    r = results["cos-training"].result
    runs = load_runs(*[str(pool / x["run"]) for x in r["runs"]])
    lines = [Line.of(x["run"], x["block"]) for x in r["runs"]]
    files = plot_loss(runs.metrics, lines, tmp_path / "loss", "note", panels=(("step", "loss"), ("time", "eval_loss")), zoom=0.5)
    assert [f.suffix for f in files] == [".png", ".pdf"] and all(f.stat().st_size > 5_000 for f in files)
    assert plot_cos_heatmap(runs.probes, lines, tmp_path / "heat", "note")
    sas_p = next(x["run"] for x in r["runs"] if x["block"] == "sas-p")
    g = gain_frame(runs.probes, sas_p, "alpha")
    assert set(g.columns) == {"layer", "step", "mean", "std"} and (g["std"] >= 0).all()
    assert g[g.step == 0]["mean"].tolist() == pytest.approx([1.0] * CI.depth)  # shaped attention init alpha = 1
    assert isinstance(g, pd.DataFrame) and g.groupby("layer").step.nunique().min() >= 2


# ------------------------------------------------------------------------------------------------
# --replot and --only: figures and verdicts from committed records, studies split across processes
# ------------------------------------------------------------------------------------------------


def test_replot_redraws_from_the_records_and_its_numbers_come_from_them(results, pool, cache, tmp_path, monkeypatch):
    """catch-up --replot trains nothing, and its verdict numbers follow the records: change one run's final eval
    loss in its summary and the reported gap changes to exactly what the records now say."""
    import sigprop.recipes.executor as base

    def no_training(*a, **k):
        raise AssertionError("--replot must not train")

    monkeypatch.setattr(base, "ensure_run", no_training)
    first = reproduce("catch-up", "ci", tmp_path / "a", runs_dir=pool, cache_dir=cache, quiet=True, replot=True)
    assert first.trained == [] and not first.result["missing"]
    numbers = [json.loads((r.out / "result.json").read_text())["numbers"] for r in (first, results["catch-up"])]
    assert numbers[0] == numbers[1]  # (via JSON: NaN std of one-seed points is null there)
    by_slug = {x["slug"]: x["run"] for x in first.result["runs"]}
    pre, sasp = (f"2x64-{b}-lr0.003-s1" for b in ("pre-ln", "sas-p"))  # stage 2: seed 1 at the pinned LR
    run = RunDir(pool / by_slug[sasp])
    summary = run.summary()
    try:
        base.atomic_write_json(run.path / "summary.json", {**summary, "final_eval_loss": summary["final_eval_loss"] + 0.5})
        again = reproduce("catch-up", "ci", tmp_path / "b", runs_dir=pool, cache_dir=cache, quiet=True, replot=True)
    finally:
        base.atomic_write_json(run.path / "summary.json", summary)
    gap = again.result["numbers"]["final_gap_pct"]["2x64/sas-p"]
    s = {slug: RunDir(pool / by_slug[slug]).summary()["final_eval_loss"] for slug in (pre, sasp)}
    assert gap["values"][1] == pytest.approx(100 * (s[sasp] + 0.5 - s[pre]) / s[pre])
    assert f"{gap['mean']:+.2f}%" in next(c["evidence"] for c in again.result["claims"] if c["claim"] == 10)


def test_replot_without_records_is_a_one_line_error(tmp_path):
    with pytest.raises(SigpropError, match="--replot: no finished run of recipe catch-up"):
        reproduce("catch-up", "ci", tmp_path / "out", runs_dir=tmp_path / "empty", quiet=True, replot=True)


def test_only_trains_the_matching_runs_and_draws_what_exists(cache, tmp_path):
    res = reproduce("catch-up", "ci", tmp_path / "out", runs_dir=tmp_path / "runs", cache_dir=cache, quiet=True,
                    only="2x64-*-lr0.003-*")
    assert sorted(x.split("-lr")[0] for x in res.trained) == ["2x64-pre-ln"] * 2 + ["2x64-sas-p"] * 2
    assert len(res.result["missing"]) == len(RECIPES["catch-up"].plans("ci")) - 4
    assert (tmp_path / "out" / "catch-up.png").exists()
    with pytest.raises(SigpropError, match="--only 'nope' matches no run"):
        reproduce("catch-up", "ci", tmp_path / "out", runs_dir=tmp_path / "runs", quiet=True, only="nope")


def test_a_recipe_that_needs_all_its_runs_trains_a_partial_set_but_draws_nothing(cache, tmp_path):
    assert not RECIPES["fig22"].partial
    res = reproduce("fig22", "ci", tmp_path / "out", runs_dir=tmp_path / "runs", cache_dir=cache, quiet=True, only="pre-ln-s0")
    assert len(res.trained) == 1 and len(res.result["missing"]) == 2 and res.files == []
    assert not (tmp_path / "out" / "result.json").exists()  # a committed result is never replaced by a partial one
    with pytest.raises(SigpropError, match="needs all 3 runs and 2 are not finished"):
        reproduce("fig22", "ci", tmp_path / "out", runs_dir=tmp_path / "runs", quiet=True, replot=True)


def test_a_gallery_figure_copies_the_finished_runs_of_its_siblings(cache, tmp_path, monkeypatch):
    """figures/<a>/runs and figures/<b>/runs share a run with the same id (block and config): the second figure
    copies its records (no checkpoints) instead of training it again, and draws the same numbers from them."""
    import sigprop.training as training

    first = reproduce("fig2", "ci", tmp_path / "figs" / "fig2", cache_dir=cache, quiet=True)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("a shared run must not be retrained"))
    again = reproduce("fig2", "ci", tmp_path / "figs" / "fig2-copy", cache_dir=cache, quiet=True)
    assert again.trained == [] and sorted(again.reused) == sorted(first.trained) and len(first.trained) == 2
    for f in first.trained:
        src, dst = tmp_path / "figs" / "fig2" / "runs" / f, tmp_path / "figs" / "fig2-copy" / "runs" / f
        assert (dst / "summary.json").read_bytes() == (src / "summary.json").read_bytes()
        assert (src / "checkpoints").exists() and not (dst / "checkpoints").exists()
    assert again.result["claims"] == first.result["claims"]


def test_thinned_records_keep_every_eval_and_draw_the_same_curves(cache, tmp_path):
    from sigprop.recipes.records import thin_metrics

    res = reproduce("catch-up", "ci", tmp_path / "full", runs_dir=tmp_path / "runs", cache_dir=cache, quiet=True,
                    only="2x64-*-s1", thin=3)
    for folder in res.trained:  # 10 steps, evals every 2
        run = RunDir(tmp_path / "runs" / folder)
        m = run.metrics()
        assert sorted(m.step) == [2, 3, 4, 6, 8, 9, 10]
        assert m.eval_loss.notna().sum() == 5 and run.summary()["metrics_thinned_every"] == 3
        assert thin_metrics(run.path, 2) == 0  # thinned once only
        assert {"metrics.jsonl.gz", "probes.jsonl.gz"} <= set(run.contents()) and not run.has("metrics.jsonl.tmp")
        assert not (run.path / "metrics.jsonl").exists() and not run.probes().empty  # packed, read as before
    packed = {f: (tmp_path / "runs" / f / "probes.jsonl.gz").read_bytes() for f in res.trained}
    again = reproduce("catch-up", "ci", tmp_path / "again", runs_dir=tmp_path / "runs", quiet=True, replot=True, thin=3)
    numbers = [json.loads((r.out / "result.json").read_text())["numbers"] for r in (res, again)]
    assert numbers[0] == numbers[1]  # the same numbers from the packed records (via JSON: NaN is null there)
    assert all((tmp_path / "runs" / f / "probes.jsonl.gz").read_bytes() == b for f, b in packed.items())
    with pytest.raises(SigpropError, match="thinning interval must be an integer >= 1"):
        thin_metrics(tmp_path / "runs" / res.trained[0], 0)


@pytest.mark.parametrize("name, figures", [("catch-up", {"catch-up.png", "lr.png", "dynamics.png"}),
                                           ("fig5", {"fig5_fig26.png"}), ("plateau", {"plateau.png", "plateau_collapse.png"}), ("fig2", {"fig2.png"}),
                                           ("fig17", {"fig17_20.png"}), ("cos-training", {"cos_training.png"}), ("fig3", {"fig3.png"}),
                                           ("successors", {"successors_loss.png", "successors_cos.png"}),
                                           ("fig7", {"fig7.png", "fig7_cos.png"}), ("fig8", {"fig8.png", "fig8_rank.png"}),
                                           ("fig22", {"fig22.png", "fig23.png"}), ("fig25", {"fig25.png"}),
                                           ("fig12", {"fig12.png"}), ("fig13", {"fig13.png"})])
def test_a_committed_gallery_figure_replots_to_its_committed_numbers(tmp_path, monkeypatch, name, figures):
    """figures/<name> holds its runs' records: --replot from them (no training) gives the committed result.json."""
    import sigprop.recipes.executor as base

    gallery = Path(__file__).resolve().parents[1] / "figures" / name
    committed = json.loads((gallery / "result.json").read_text())
    monkeypatch.setattr(base, "ensure_run", lambda *a, **k: pytest.fail("--replot must not train"))
    res = reproduce(name, "cpu", tmp_path, runs_dir=gallery / "runs", quiet=True, replot=True)
    again = json.loads((tmp_path / "result.json").read_text())
    assert again["numbers"] == committed["numbers"] and again["claims"] == committed["claims"]
    assert sorted(res.reused) == sorted(committed["reused"] + committed["trained"])
    assert figures <= {f.name for f in res.files}


def test_a_replot_into_the_committed_folder_leaves_every_file_byte_identical(tmp_path, monkeypatch):
    """Issue 26: `reproduce fig17 --replot` (no --out) rewrote the committed result.json (its runtime_s); now it changes
    no byte, figures included (on a copy of the checkout's figures/fig17, standing in for the gallery)."""
    import shutil

    import sigprop.recipes.records as records

    shutil.copytree(records.GALLERY / "fig17", tmp_path / "figures" / "fig17")
    monkeypatch.setattr(records, "GALLERY", tmp_path / "figures")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = reproduce("fig17", quiet=True, replot=True)
    assert res.scale == "cpu" and res.out == tmp_path / "figures" / "fig17" and res.reused and not res.trained
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after.keys() == before.keys() and [k for k in before if before[k] != after[k]] == []


def test_replot_reads_the_committed_records_and_writes_where_out_says(tmp_path, monkeypatch):
    """Issue 26: `reproduce gpu --replot --out DIR`, from any folder and without --scale (gpu is that recipe's own),
    redraws from figures/gpu/runs into DIR; the committed folder is not written."""
    import sigprop.recipes.executor as base

    gallery = Path(__file__).resolve().parents[1] / "figures" / "gpu"
    stamp = {p: p.stat().st_mtime_ns for p in gallery.iterdir() if p.is_file()}
    monkeypatch.setattr(base, "ensure_run", lambda *a, **k: pytest.fail("--replot must not train"))
    monkeypatch.chdir(tmp_path)
    r = CLI.invoke(app, ["reproduce", "gpu", "--replot", "--out", "here", "-q"])
    assert r.exit_code == 0, r.output
    made = json.loads((tmp_path / "here" / "result.json").read_text())
    assert made["scale"] == "gpu" and made["command"].endswith("--out here --runs figures/gpu/runs")
    assert made["numbers"] == json.loads((gallery / "result.json").read_text())["numbers"]
    assert {p: p.stat().st_mtime_ns for p in gallery.iterdir() if p.is_file()} == stamp
    with pytest.raises(SigpropError, match="--replot: recipe table1 trains no runs"):  # it measures: nothing to redraw
        reproduce("table1", out=tmp_path / "t1", quiet=True, replot=True)


def test_the_committed_gpu_figure_replots_from_its_records_with_the_device_named(tmp_path, monkeypatch):
    """figures/gpu: two calls on one GPU; --replot at the gpu scale redraws it, numbers read from the runs' own records."""
    import sigprop.recipes.executor as base

    gallery = Path(__file__).resolve().parents[1] / "figures" / "gpu"
    committed = json.loads((gallery / "result.json").read_text())
    monkeypatch.setattr(base, "ensure_run", lambda *a, **k: pytest.fail("--replot must not train"))
    res = reproduce("gpu", "gpu", tmp_path, runs_dir=gallery / "runs", quiet=True, replot=True)
    again = json.loads((tmp_path / "result.json").read_text())
    assert again["numbers"] == committed["numbers"] and again["claims"] == committed["claims"]
    assert {"gpu_short.png", "gpu_prefix.png", "gpu_gap.png", "gpu_collapse.png"} <= {f.name for f in res.files}
    n = again["numbers"]
    assert n["device"] and n["device"] != "cpu" and n["device"] in again["claims"][0]["evidence"]
    for stage in ("short", "prefix"):  # every final loss is the one its run's summary.json recorded
        for block, loss in n[stage]["final_eval_loss"].items():
            run = next(r for r in again["runs"] if r["block"] == block and r["stage"] == ("paper prefix" if stage == "prefix" else "short warm-up"))
            summary = json.loads((gallery / "runs" / run["run"] / "summary.json").read_text())
            if summary["status"] == "done":
                assert loss == pytest.approx(summary["final_eval_loss"])
    assert all(c["verdict"] == "not decidable (1 seed, need 3)" for c in again["claims"])


def test_gpu_recipe_decides_claim_10_from_the_paired_seeds_of_the_paper_prefix(results):
    """The prefix stage plans several seeds: its gap is over the seeds' own final losses, and the ci verdict decides nothing."""
    r = results["gpu"].result
    loss = {(x["block"], x["seed"]): x["final_eval_loss"] for x in r["runs"] if x["stage"] == "paper prefix"}
    gap = r["numbers"]["prefix"]["gap_over_seeds"]["sas-p"]
    want = [100 * (loss["sas-p", s] - loss["pre-ln", s]) / loss["pre-ln", s] for s in (0, 1)]
    assert gap["n"] == 2 and gap["values"] == pytest.approx(want)
    claim10 = next(c for c in r["claims"] if c["claim"] == 10)
    assert claim10["verdict"] == "not decidable at ci scale" and "(2 seeds)" in claim10["evidence"]
    assert all(isinstance(x["steps"], int) for x in r["runs"])


def test_a_scale_a_recipe_does_not_plan_is_a_one_line_error(tmp_path):
    for name, scale, accepted in (("gpu", "cpu", "ci, gpu"), ("fig3", "gpu", "ci, cpu, paper")):
        with pytest.raises(SigpropError, match=f"accepted: {accepted}") as e:
            reproduce(name, scale, tmp_path / name, quiet=True)
        assert "\n" not in str(e.value) and repr(scale) in str(e.value)


def test_committed_gallery_runs_are_finished_records_only():
    """Every run folder committed under figures/*/runs is a finished run's records (config, env, metrics, probes,
    summary): no lock, no checkpoint, and metrics that reach the step its summary reports."""
    import subprocess

    from sigprop.recipes.records import FINISHED

    repo = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "ls-files", "figures"], cwd=repo, capture_output=True, text=True)
    files = [Path(f) for f in listed.stdout.split()] if listed.returncode == 0 else \
        [p.relative_to(repo) for p in (repo / "figures").rglob("*") if p.is_file()]
    runs: dict[Path, set[str]] = {}
    for f in files:
        if len(f.parts) >= 5 and f.parts[2] == "runs":
            runs.setdefault(Path(*f.parts[:4]), set()).add("/".join(f.parts[4:]))
    assert runs, "no committed gallery runs found"
    records = {"config.json", "env.json", "metrics.jsonl", "probes.jsonl", "summary.json", "final_analysis.csv"}
    for run, names in runs.items():
        assert names <= records | {"metrics.jsonl.gz", "probes.jsonl.gz"}, (run, names)
        assert {"config.json", "summary.json"} <= names and len(names & {"metrics.jsonl", "metrics.jsonl.gz"}) == 1, (run, names)
        assert not {"probes.jsonl", "probes.jsonl.gz"} <= names, (run, names)  # one copy of each record
        summary = json.loads((repo / run / "summary.json").read_text())
        assert summary["status"] in FINISHED, (run, summary["status"])
        last = int(RunDir(repo / run).metrics().step.max())
        assert last == summary["step"], (run, last, summary["step"])


def test_dry_run_says_what_reproduce_would_do_with_each_run(cache, tmp_path):
    """--dry-run trains nothing and names each run's action: train, finished, copy from a sibling figure's runs/,
    resume at the last recorded step, or training now when another process holds the run's lock."""
    from sigprop.recipes import plan_status
    from sigprop.runs import RunLock
    from sigprop.training import train

    figs = tmp_path / "figs"
    assert set(plan_status("fig2", "ci", figs / "fig2").action) == {"train"}
    first = reproduce("fig2", "ci", figs / "fig2", cache_dir=cache, quiet=True)
    assert set(plan_status("fig2", "ci", figs / "fig2").action) == {"finished"}
    assert set(plan_status("fig2", "ci", figs / "copy").action) == {"copy from fig2"}
    p = RECIPES["fig17"].plans("ci")[0]
    cfg = p.config(CI)
    folder = figs / "fig17" / "runs" / f"{p.slug}-{run_id(p.spec, cfg)}"
    train(p.spec, cfg.replace(steps=5), folder, cache_dir=cache, quiet=True)
    assert plan_status("fig17", "ci", figs / "fig17").action.iloc[0] == "resume at step 5"
    with RunLock(folder):
        assert plan_status("fig17", "ci", figs / "fig17").action.iloc[0].startswith("training now (process ")
    res = CLI.invoke(app, ["reproduce", "fig2", "--scale", "ci", "--out", str(figs / "fresh"), "--dry-run"])
    assert res.exit_code == 0 and "0 of 2 runs finished (0.0 h of training); 0 to train, 0 to resume, 2 to copy" in " ".join(res.output.split())
    assert not (figs / "fresh").exists() and len(first.trained) == 2


def test_a_partial_recipe_with_nothing_to_draw_yet_writes_nothing(cache, tmp_path):
    """fig4 draws the trainable model's gain ratios: with only its fixed-V/P baseline finished there is no figure
    yet, and reproduce says so instead of failing (no result.json is written)."""
    res = reproduce("fig4", "ci", tmp_path / "out", runs_dir=tmp_path / "runs", cache_dir=cache, quiet=True, only="sas-s0")
    assert len(res.trained) == 1 and res.files == [] and len(res.result["missing"]) == 1
    assert not (tmp_path / "out" / "result.json").exists()
