"""The notebooks run top to bottom at the ci scale (nbclient, the venv's python3 kernel) and show what they say.

Each notebook reads SIGPROP_NOTEBOOK_SCALE in its first code cell. The test executes it at "ci" in a
temporary folder (runs and the tiny code corpus land there), fails on any cell error, then runs one
extra cell in the same kernel that reports the notebook's own results as JSON, and checks them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MARK = "RESULT "

#: Appended to each notebook: its results, read from the notebook's own variables.
REPORT = {
    "01_rank_collapse_at_init": """
print("RESULT " + json.dumps({
    "verdicts": a.verdicts,
    "exact": {b: t.exact for b, t in a.theory.items()},
    "theory_error": summary["max |theory - measured| cos"].astype(float).to_dict(),
    "sas_dev": sas_dev,
    "naive_dev": naive_dev,
    "layers": sorted(int(k) for k in A_sas),
    "depth": S["depth"],
}))
""",
    "02_training_dynamics": """
print("RESULT " + json.dumps({
    "status": dict(zip(table["block"], table["status"])),
    "last_step": {b: int(R.metrics[R.metrics["block"] == b]["step"].max()) for b in BLOCKS},
    "steps": CFG.steps,
    "first_eval": ev.iloc[0].astype(float).to_dict(),
    "last_eval": ev.iloc[-1].astype(float).to_dict(),
    "cos_last_at_init": cos_last.iloc[:, 0].astype(float).to_dict(),
    "gain_metrics": sorted(gains["metric"].unique().tolist()),
    "gain_steps": sorted(int(s) for s in gains["step"].unique()),
    "beta_init": float(gains[(gains["metric"] == "beta") & (gains["step"] == 0)]["value"].mean()),
    "beta_change": float((final[final["metric"] == "beta"]["value"] - 1.0).abs().max()),
}))
""",
    "03_knob_space": """
def theory_drift(rule):
    d = drift[(drift.source == "theory") & (drift.rule == rule)].sort_values("depth")
    return dict(zip(d.depth.astype(int).tolist(), d.drift.astype(float).tolist()))

print("RESULT " + json.dumps({
    "rule_drift": theory_drift("beta_ff = 0.1 sqrt(18/L)"),
    "fixed_drift": theory_drift("beta_ff = 1"),
    "identity_dev": identity_dev.astype(float).to_dict(),
    "shaped_verdicts": a_shaped.verdicts,
    "attn_verdicts": a_attn.verdicts,
    "norm_sq": {b: a_norm.measured(b, "norm_sq").tolist() for b in a_norm.blocks},
    "skipless_last_cos": by_depth[by_depth.block == "skipless"]["cos_mean[L]"].astype(float).tolist(),
    "sas_p_last_cos": by_depth[by_depth.block == "sas-p"]["cos_mean[L]"].astype(float).tolist(),
    "params": {b: int(v) for b, v in params["L=18"].items()},
}))
""",
}


@pytest.fixture
def ci_env(tmp_path, monkeypatch):
    """The kernel inherits this environment: ci scale, a private corpus cache, one thread (tiny ops on a shared CPU)."""
    monkeypatch.setenv("SIGPROP_NOTEBOOK_SCALE", "ci")
    monkeypatch.setenv("SIGPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def execute(name: str, workdir: Path, report: bool = True) -> tuple[nbformat.NotebookNode, dict]:
    """Run notebooks/<name>.ipynb in `workdir` (raises CellExecutionError on any error); return it and its report."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if report:
        nb.cells.append(nbformat.v4.new_code_cell("import json\n" + REPORT[name].strip()))
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(workdir)}}).execute()
    if not report:
        return nb, {}
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    line = next((ln for ln in text.splitlines() if ln.startswith(MARK)), None)
    assert line is not None, f"{name}: the report cell printed no result: {text[:500]!r}"
    return nb, json.loads(line[len(MARK):])


def images(nb: nbformat.NotebookNode) -> int:
    """How many PNG figures the executed notebook displays."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_structure_every_notebook_says_what_it_shows_and_has_a_scale_parameter():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(REPORT), names
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown" and "What this shows" in nb.cells[0].source
        first = next(c for c in nb.cells if c.cell_type == "code")  # the parameter cell (papermill's tag)
        assert "parameters" in first.metadata.get("tags", [])
        assert 'SCALE = os.environ.get("SIGPROP_NOTEBOOK_SCALE", "cpu")' in first.source
        assert (NOTEBOOKS / f"{name}.ipynb").stat().st_size < 400_000, f"{name}: strip or shrink its outputs"


def test_rank_collapse_notebook(ci_env):
    nb, r = execute("01_rank_collapse_at_init", ci_env)
    v = r["verdicts"]
    assert v["skipless"].startswith("rank collapse"), v["skipless"]
    for block in ("v-skipinit", "sas", "sas-p", "sas-p-nonorm"):
        assert v[block].startswith("no rank collapse"), (block, v[block])
    # the theory is exact exactly where W^Q = 0, and then matches the measurement closely
    assert r["exact"]["sas"] and r["exact"]["sas-p"] and not r["exact"]["pre-ln"] and not r["exact"]["skipless"]
    assert r["theory_error"]["sas"] < 0.01 and r["theory_error"]["sas-p"] < 0.01
    # SAS attention is exactly the identity at init in every layer; naive softmax is close to C
    assert r["sas_dev"] == 0.0 and r["layers"] == list(range(1, r["depth"] + 1))
    assert 0 < r["naive_dev"] < 0.05  # mean |A - C| over causal entries: softmax of small logits
    assert images(nb) >= 4


def test_training_dynamics_notebook(ci_env):
    nb, r = execute("02_training_dynamics", ci_env)
    assert set(r["status"].values()) == {"done"} and set(r["last_step"].values()) == {r["steps"]}
    for block, loss in r["last_eval"].items():
        assert math.isfinite(loss) and loss < r["first_eval"][block], (block, r["first_eval"][block], loss)
    # at init the naive skipless block is (nearly) collapsed in its last layer, SAS-P is not
    assert r["cos_last_at_init"]["skipless"] > 0.8 > 0.1 > r["cos_last_at_init"]["sas-p"]
    assert {"alpha", "beta", "gamma", "beta_ff"} <= set(r["gain_metrics"])
    assert r["gain_steps"][0] == 0 and r["gain_steps"][-1] == r["steps"] and len(r["gain_steps"]) >= 3
    assert r["beta_init"] == 1.0 and r["beta_change"] > 0  # the gains were trained and read back
    assert (ci_env / "runs" / "notebook-02-ci" / "loss.png").stat().st_size > 0
    assert images(nb) >= 3


def test_knob_space_notebook(ci_env):
    nb, r = execute("03_knob_space", ci_env)
    # beta_ff = 0.1 sqrt(18/L): the same drift at every depth; fixed beta_ff: drift doubles with depth
    rule = list(r["rule_drift"].values())
    assert max(rule) / min(rule) < 1.01
    fixed = sorted((int(L), d) for L, d in r["fixed_drift"].items())
    for (l1, d1), (l2, d2) in zip(fixed, fixed[1:]):
        assert 0.8 < (d2 / d1) / (l2 / l1) < 1.2, fixed
    dev = r["identity_dev"]
    assert dev["sas"] == 0.0 and dev["SAS, gamma=0"] > 0.5 and 0 < dev["SAS, W^Q std 0.02"] < 0.5
    assert r["shaped_verdicts"]["SAS, gamma=0"].startswith("rank collapse")
    assert r["shaped_verdicts"]["sas"].startswith("no rank collapse")
    assert r["attn_verdicts"]["value-SkipInit, beta=0"].startswith("no rank collapse")
    assert r["attn_verdicts"]["value-SkipInit, beta=1"].startswith("rank collapse")
    ns = r["norm_sq"]
    assert ns["pre-ln"][-1] > 2 * ns["pre-ln"][0] and abs(ns["Pre-LN, norm=none"][-1] / ns["Pre-LN, norm=none"][0] - 1) < 0.2
    assert min(r["skipless_last_cos"]) > 0.8 > 0.1 > max(r["sas_p_last_cos"])
    saving = 1 - r["params"]["sas"] / r["params"]["pre-ln"]
    assert 0.11 < saving < 0.14, saving  # paper footnote 7: 167M -> 146M (13%)
    assert images(nb) >= 4


def test_unknown_scale_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGPROP_NOTEBOOK_SCALE", "huge")
    with pytest.raises(CellExecutionError) as err:
        execute("01_rank_collapse_at_init", tmp_path, report=False)
    assert "SigpropError" in str(err.value) and "unknown SCALE 'huge'; accepted: cpu, ci" in str(err.value)
