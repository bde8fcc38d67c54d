"""The gallery's training budget (`sigprop.recipes.budget`): every distinct run once, measured where finished,
estimated from model FLOPs where not, and the committed cpu gallery (tiers 1-2) inside issue 10's 24 hours."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sigprop.cli import app
from sigprop.recipes import RECIPES, reproduce
from sigprop.recipes.budget import BUDGET_HOURS, flops_per_token, gallery_budget
from sigprop.training import get_config

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_cpu_gallery_fits_the_24_hour_budget():
    t = gallery_budget("cpu", REPO / "figures")
    assert t.id.is_unique and set(t.tier) <= {1, 2, 3}
    inside = t[t.tier <= 2]
    assert inside.plan_hours.sum() <= BUDGET_HOURS["cpu"], inside.groupby("recipe").plan_hours.sum().round(2).to_dict()
    # the runs that decide the paper's main claims are in the first tier: the catch-up study at 4x128, every seed
    main = t[t.slug.str.match(r"4x128-(pre-ln|sas|sas-p|v-skipinit)-lr0.004-s[012]$")]
    assert len(main) == 12 and set(main.tier) == {1}
    # a finished run's hours are its own measured wall time, not an estimate
    done = t[t.status == "finished"]
    assert len(done) >= 18 and not done.estimated.any()
    row = done.iloc[0]
    summary = json.loads(next((REPO / "figures").glob(f"*/runs/*-{row.id}/summary.json")).read_text())
    assert abs(row.hours - summary["wall_time_s"] / 3600) < 1e-9
    # the plan prices every run by its FLOPs at one rate, so a run on a slower machine does not move the plan
    to_train = t[t.status == "to train"]
    assert (to_train.plan_hours == to_train.hours).all() and (done.plan_hours > 0).all()
    same_config = t[t.slug.str.startswith("12x128-pre-ln")]  # finished on two CPUs, or still to train
    assert len(same_config) >= 2 and same_config.plan_hours.nunique() == 1


def test_a_shared_run_counts_once_measured_and_the_rest_is_estimated_by_flops(cache, tmp_path):
    figs = tmp_path / "figs"
    res = reproduce("fig2", "ci", figs / "fig2", cache_dir=cache, quiet=True)
    t = gallery_budget("ci", figs)
    assert t.id.is_unique
    mine = t[t.id.isin({f.rsplit("-", 1)[1] for f in res.trained})]
    assert len(mine) == len(res.trained) == 2 and set(mine.status) == {"finished"} and not mine.estimated.any()
    assert {r.recipe for r in mine.itertuples()} <= set(RECIPES)  # counted under the first recipe that plans it
    todo = t[t.status == "to train"]
    assert len(todo) and todo.estimated.all() and (todo.hours > 0).all()
    # estimates scale with the model's FLOPs: a 4x wider model costs more than 4x per token
    small, wide = get_config("ci"), get_config("ci", width=4 * get_config("ci").width)
    assert flops_per_token("pre-ln", wide) > 4 * flops_per_token("pre-ln", small)


def test_dry_run_names_each_cpu_runs_budget_tier(tmp_path):
    from sigprop.recipes import plan_status

    st = plan_status("fig3", "cpu", tmp_path / "fig3").set_index("slug")
    assert st.loc["reparam-identity-b0-s1", "tier"] == 1  # claim 4, decided with 3 seeds
    assert st.loc["reparam-identity-b0.2-s0", "tier"] == 2  # claim 2, 3 seeds
    assert st.loc["reparam-orthogonal-b0.2-s2", "tier"] == 2  # claim 3, 3 seeds at DECIDE_BETAS
    assert st.loc["reparam-orthogonal-b0-s0", "tier"] == 3  # a one-seed point decides nothing: beyond the budget
    assert st.loc["pre-ln-s0", "tier"] == 1
    assert set(st.action) == {"train"} and plan_status("fig3", "ci", tmp_path / "ci").tier.isna().all()
    r = CliRunner().invoke(app, ["reproduce", "fig3", "--dry-run", "--out", str(tmp_path / "fig3")], env={"COLUMNS": "160"})
    assert r.exit_code == 0 and "tier" in r.output, r.output


def test_cli_budget_prints_the_table(cache, tmp_path):
    r = CliRunner().invoke(app, ["reproduce", "--budget", "--scale", "ci", "--out", str(tmp_path)], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "distinct runs" in r.output and "catch-up" in r.output and "to train h" in r.output


def test_budget_reads_the_checkouts_gallery_from_any_folder(tmp_path, monkeypatch):
    """Issue 26: --budget outside the checkout said 0 finished and 97.7 h; it now reads the checkout's figures/, and
    where sigprop is not a checkout it says so in one line."""
    import pytest

    import sigprop.recipes.records as records
    from sigprop.errors import SigpropError

    inside = CliRunner().invoke(app, ["reproduce", "--budget"], env={"COLUMNS": "200"})
    monkeypatch.chdir(tmp_path)
    outside = CliRunner().invoke(app, ["reproduce", "--budget"], env={"COLUMNS": "200"})
    assert inside.exit_code == outside.exit_code == 0, outside.output
    assert outside.output == inside.output
    t = gallery_budget("cpu", REPO / "figures")
    took = t[t.status == "finished"].hours.sum()
    assert took > 10 and f"the finished runs took {took:.1f} h" in " ".join(outside.output.split())
    monkeypatch.setattr(records, "GALLERY", tmp_path / "site-packages" / "figures")
    r = CliRunner().invoke(app, ["reproduce", "--budget"])
    assert isinstance(r.exception, SigpropError) and "not a checkout" in str(r.exception)
    with pytest.raises(SigpropError, match="no gallery"):
        records.gallery()
