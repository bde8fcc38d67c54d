"""What a recipe is: its runs, scales, claims and verdicts (the executor that runs it is `recipes.executor`).

A recipe is declarative: a name, its paper counterpart ("Fig. 3"), the claims of paper.md §6 it tests,
the runs it needs at each scale (`RunPlan`: a block spec + TrainConfig overrides), and a `make` function
that reads the finished runs (as `load_runs` frames) and writes figures plus the deciding numbers.

    result = reproduce("fig3", scale="cpu", out="figures/fig3", runs_dir="runs/recipes")

Runs live in `<runs_dir>/<slug>-<hash>`; the hash covers the block's knobs and every TrainConfig field
that changes the numbers, so recipes that need the same run share it, a finished run is never retrained,
an unfinished one is resumed, and a different experiment can never be mistaken for it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sigprop.blocks import BlockSpec, get_spec
from sigprop.blocks.spec import KNOBS_OMIT_AT_DEFAULT
from sigprop.errors import SigpropError
from sigprop.runs import Runs
from sigprop.training import SCALES, TrainConfig
from sigprop.training.config import HASH_OMIT_AT_DEFAULT, RUNTIME_FIELDS

RECIPE_SCALES = ("ci", "cpu", "gpu", "paper")
#: the scales most recipes plan; the gpu scale is planned only by recipes sized for one GPU call (`recipes.gpu`)
DEFAULT_SCALES = ("ci", "cpu", "paper")

# ------------------------------------------------------------------------------------------------
# Base training configs per scale
# ------------------------------------------------------------------------------------------------

#: ci: seconds per run (the test suite); probes at steps 0, 5, 10 so gain trajectories have 3 points.
CI = SCALES["ci"].replace(steps=10, eval_every=5, eval_batches=1, probe_every=5, probe_batch=2, ckpt_every=10)
#: cpu, the long scale (`training.config.SCALES["cpu"]`, one definition for train, compare and reproduce): where
#: per-step claims get decided (issue 10): 2,000 steps x 4,096 tokens = 8.2M tokens at 4x128, T=128, batch 32, with a
#: 4,096-token BPE vocabulary so that the blocks, not the tied LM head, carry most of a step's FLOPs. Dense evals early
#: (every 50 steps) for the log-token catch-up curves; thin probes. Peak LR 4e-3: the best of the catch-up grid
#: 1e-3..8e-3 for both Pre-LN and SAS-P at this size (the paper's 1e-3 is 0.27 / 0.35 nats worse there).
CPU_LONG = SCALES["cpu"]
#: gpu: the paper's model and batch (18x768, 12 heads, T=128, batch 128, peak LR 1e-3, 5% warm-up, linear decay) for
#: 1,500 steps (24.6M tokens), sized so that Pre-LN, SAS and SAS-P train in one ten-minute call on one H100/H200 in
#: bf16. Data: the stdlib plus installed packages capped at 120 MB (~32M tokens), so no token is seen twice (the
#: stdlib alone, ~9M tokens, would be repeated ~3 times). Checkpoint only at the end.
GPU = SCALES["paper"].replace(
    scale="gpu", vocab_size=8192, source="packages", max_bytes=120_000_000, steps=1500, grad_accum=1, eval_every=50,
    eval_batches=16, probe_every=250, probe_batch=16, ckpt_every=1500, precision="bf16",
)
#: paper: the CodeParrot setting of paper.md §3.1 (18x768, T=128, batch 128, 40K steps); needs a GPU.
PAPER = SCALES["paper"]
BASE: dict[str, TrainConfig] = {"ci": CI, "cpu": CPU_LONG, "gpu": GPU, "paper": PAPER}


@dataclass(frozen=True)
class RunPlan:
    """One training run a recipe needs: a slug (readable folder prefix), the block, config overrides,
    a legend label, and the knob values the plot groups by (e.g. {"init": "identity", "beta": 0.2})."""

    slug: str
    spec: BlockSpec
    overrides: dict = field(default_factory=dict)
    label: str = ""
    params: dict = field(default_factory=dict)

    def config(self, base: TrainConfig) -> TrainConfig:
        return base.replace(**self.overrides)


def plan(block: str | BlockSpec, slug: str | None = None, label: str | None = None, params: dict | None = None,
         **overrides: object) -> RunPlan:
    """Shorthand: plan("sas", schedule="cosine") -> RunPlan for the SAS preset with a cosine schedule."""
    spec = get_spec(block)
    from sigprop.plots.style import block_style

    return RunPlan(slug or spec.name, spec, dict(overrides), label or block_style(spec.name)["label"], dict(params or {}))


def variant(base: str, name: str, **knobs: object) -> BlockSpec:
    """A preset with some knobs changed, keeping the preset's name (so it keeps its paper colour)."""
    return dataclasses.replace(get_spec(base).replace(**knobs), name=name)


def run_id(spec: BlockSpec, cfg: TrainConfig) -> str:
    """8 hex digits over the block knobs and the config fields that change the numbers."""
    default = TrainConfig()
    train = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS and k != "scale"
             and not (k in HASH_OMIT_AT_DEFAULT and v == getattr(default, k))}
    plain = BlockSpec()
    knobs = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.knobs().items()
             if not (k in KNOBS_OMIT_AT_DEFAULT and v == getattr(plain, k))}
    text = json.dumps({"spec": knobs, "train": train}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass
class Context:
    """What a recipe's `make` sees: its finished runs as frames, one row per plan, and where to write."""

    recipe: Recipe
    scale: str
    out: Path
    base: TrainConfig
    plans: list[RunPlan]
    folders: list[str]  # run folder name per plan (the `run` column of the frames)
    runs: Runs | None
    cache_dir: str | Path | None = None
    progress: bool = True
    _table: pd.DataFrame | None = field(default=None, init=False, repr=False)  # table()'s, built once: runs are fixed

    def note(self, extra: str = "", depth: str | None = None, lr: str | None = None) -> str:
        """The scale stamp: model size, steps, data (plus anything a recipe adds; `depth` or `lr` when runs differ in it)."""
        c = self.base
        text = (f"{self.recipe.name} at scale {self.scale}: {depth or c.depth}x{c.width}, {c.heads} heads, V={c.vocab_size}, "
                f"T={c.seq_len}, batch {c.batch_size}, {c.steps} steps, lr {lr or f'{c.lr:g}'}, {c.schedule} decay, data {c.source}"
                + (f", ≤{c.max_bytes / 1e6:g} MB" if c.max_bytes else ""))
        return text + (f"; {extra}" if extra else "")

    def table(self) -> pd.DataFrame:
        """One row per plan: slug, run, label, plan params, block, status, final eval/train loss, params, time
        (a copy: callers may add columns)."""
        if self._table is None:
            self._table = self._build_table()
        return self._table.copy()

    def _build_table(self) -> pd.DataFrame:
        s = self.runs.summaries.set_index("run") if self.runs is not None and not self.runs.summaries.empty else None
        rows = []
        for p, run in zip(self.plans, self.folders):
            row = {"slug": p.slug, "run": run, "label": p.label, "block": p.spec.name, **p.params}
            summ = s.loc[run].to_dict() if s is not None and run in s.index else {}
            for k in ("status", "final_eval_loss", "final_train_loss", "params", "train_time_s", "wall_time_s", "step", "steps"):
                row[k] = summ.get(k)
            if row["status"] == "diverged":
                row["final_eval_loss"] = float("nan")  # a diverged run has no comparable final loss
            rows.append(row)
        return pd.DataFrame(rows)

    def finished(self, prefix: str = "", seed: int | None = None) -> pd.DataFrame:
        """The table's finished runs (done or diverged) whose slug starts with `prefix`, of one `seed` if given."""
        from sigprop.recipes.records import FINISHED

        t = self.table()
        keep = t.slug.str.startswith(prefix) & t.status.isin(FINISHED)
        return t[keep & (t.seed == seed)] if seed is not None else t[keep]

    def line(self, slug: str) -> str:
        """The run folder of a plan by slug."""
        for p, run in zip(self.plans, self.folders):
            if p.slug == slug:
                return run
        raise SigpropError(f"unknown run {slug!r} in recipe {self.recipe.name}; accepted: {', '.join(p.slug for p in self.plans)}")


@dataclass(frozen=True)
class Recipe:
    """A reproduced figure or table: what it tests, which runs it needs per scale, and how it is drawn."""

    name: str
    paper: str  # paper counterpart, e.g. "Fig. 3"
    shows: str  # one line: what the figure shows
    claims: tuple[int, ...]  # paper.md §6 claim numbers
    runs: Callable[[str], list[RunPlan]]  # scale -> runs (may be empty: analysis / benchmark recipes)
    make: Callable[[Context], dict | None]  # writes figures into ctx.out; returns the numbers + verdicts (None: nothing yet)
    runtime: dict[str, str]  # expected runtime per scale (measured on 2 shared cores for cpu)
    base: dict[str, TrainConfig] = field(default_factory=lambda: dict(BASE))
    partial: bool = False  # make() can draw from a subset of the runs (a study trained over several days)
    #: each cpu run's priority in the gallery's 24-hour budget (issue 10's order; `recipes.budget`): 1 = the paper's
    #: main claims (1, 4, 8, 10) and the catch-up study, 2 = claims 5, 7, 13, 17 and the plateau, 3 = beyond the budget
    #: (planned and trainable, not part of the committed gallery). A number, or plan -> number.
    tier: int | Callable[[RunPlan], int] = 3
    #: scale -> the runs a staged study will add once its first stage is in (e.g. seeds at a best LR not yet known),
    #: at a stand-in config of the same cost: counted by the budget, never trained
    pending: Callable[[str], list[RunPlan]] | None = None
    #: the scales this recipe plans (`sigprop reproduce NAME --scale S`)
    scales: tuple[str, ...] = DEFAULT_SCALES

    def plans(self, scale: str) -> list[RunPlan]:
        self.check_scale(scale)
        return self.runs(scale)

    def check_scale(self, scale: str) -> None:
        """A one-line error naming the scales this recipe plans when `scale` is not one of them."""
        if scale not in self.scales:
            raise SigpropError(f"unknown scale {scale!r} for recipe {self.name}; accepted: {', '.join(self.scales)}")

    def tier_of(self, p: RunPlan) -> int:
        return self.tier(p) if callable(self.tier) else self.tier


# ------------------------------------------------------------------------------------------------
# Verdicts: "reproduced" / "not reproduced" with the deciding number
# ------------------------------------------------------------------------------------------------

CLAIMS = {
    1: "removing the attention skip slows per-step training, even with shaped attention (V-SkipInit)",
    2: "smaller fixed beta_V = beta_P gives lower final loss, monotonically",
    3: "identity W_init beats orthogonal W_init at every beta",
    4: "with beta_V = beta_P = 0 and identity init, skipless attention matches Pre-LN per step",
    5: "trainable V/P gain ratios beta/alpha decay towards 0 in skipless blocks; no gain over fixed identity",
    6: "with the attention skip (Pre-LN) it reverses: trainable V/P ratios grow, and identity V/P slightly hurt",
    7: "shaped attention beats alpha I + beta A (value-skipinit) slightly and consistently",
    8: "SAS matches Pre-LN per step and is faster in wall-clock time",
    9: "removing the MLP skip in a sequential block hurts badly; leaky ReLU is worse than ReLU",
    10: "SAS-P matches Pre-LN per step and is the fastest normed block in runtime",
    11: "SAS-P without norms still trains, slightly worse per step",
    12: "V/P removal cuts parameters (~13-16%); SAS-P gives the largest speed-up",
    13: "SAS and SAS-P improve with depth and stay close to Pre-LN; V-SkipInit falls further behind",
    14: "with 3x more tokens the SAS / SAS-P results persist",
    15: "the best peak LR of SAS and SAS-P is Pre-LN's (1e-3 on CodeParrot): one LR serves all three",
    16: "shaped-attention alpha, beta, gamma and beta_FF do not collapse to 0 during training",
    17: "linear decay beats cosine decay at the end of training, for all blocks",
    19: "(sigprop) naive skipless attention collapses tokens (cos_mean -> 1) at init; SAS keeps the embedding geometry",
    20: "(sigprop) in Pre-LN and SAS-P the tokens do not end training collapsed (cos_mean < 0.9 in every layer)",
    21: "(paper §1.2) skipless blocks need a downweighted MLP branch, beta_FF < 1 at init",
    22: "(paper Fig. 24) a trainable first-layer W^V is very slightly better than W^V_1 = I in SAS and SAS-P",
    23: "(paper Fig. 9, App. A) lowering only the W^V/W^P learning rate helps, as a smaller fixed beta does (Adam: ratio r ~ beta = r)",
    25: "(sequel, He et al. 2024 Sec. 3) the Outlier-Protected block matches Pre-LN per step",
    26: "(sequel Sec. 3) Pre-LN's kurtosis of neuron activation RMS grows during training; OP's stays far lower",
    27: "(sequel Sec. 5) a larger learning rate gives more outlier features",
    28: "(sequel Sec. 4) worse signal propagation (higher token correlation early in training) goes with more outlier features",
    29: "(sequel Sec. 5) a non-diagonal preconditioner (SOAP/Shampoo; torch's Muon here) gives fewer outlier features than AdamW",
    30: "(sequel Sec. 6, Table 1) OP loses less than Pre-LN under W8A8 post-training quantisation",
    31: "(DyT, Zhu et al. 2025) Pre-LN with DyT in place of every norm matches Pre-LN per step",
    32: "(DyT, Sec. 7) the loss of an LLM with DyT depends on alpha's init",
    33: "(Peri-LN, Kim et al. 2025) Peri-LN ends at or below Pre-LN, with a smaller spread of hidden-state RMS over layers",
    34: "(gated attention, Qiu et al. 2025) a sigmoid gate after SDPA lowers the attention-sink share and the largest activation, without losing per step",
    35: "(ResFormer, Zhou et al. 2024) value residual learning gains per step",
    36: "(nGPT, Loshchilov et al. 2025) nGPT reaches Pre-LN's final loss in fewer tokens (its headline: 4-20x fewer steps)",
    24: "(sigprop) a long warm-up (the paper's is 2,000 steps) lets SAS-P match Pre-LN per step at a high LR where a short one leaves it behind",
}


def verdict(claim: int, ok: bool | str, evidence: str) -> dict:
    """One claim's outcome at this scale, with the number that decides it. `ok` is a bool (one run per side:
    reproduced / not reproduced) or a verdict string from `recipes.stats.verdict_for` (seeded comparisons)."""
    text = ok if isinstance(ok, str) else ("reproduced" if ok else "not reproduced")
    return {"claim": claim, "text": CLAIMS.get(claim, ""), "verdict": text, "evidence": evidence}


def undecided_at(scale: str, claims: list[dict]) -> list[dict]:
    """At the ci scale nothing is decided: each verdict becomes 'not decidable at ci scale', keeping what the
    numbers would have said as `outcome` (ci runs are seconds long and test the pipeline, not the paper)."""
    if scale != "ci":
        return claims
    return [{**c, "verdict": "not decidable at ci scale", "outcome": c["verdict"]} for c in claims]


#: seeds of the comparisons that decide a claim: one at ci (the pipeline only), three at cpu and paper, one at gpu
#: (one ten-minute GPU call: an indication, never a verdict)
SEEDS = {"ci": (0,), "cpu": (0, 1, 2), "gpu": (0,), "paper": (0, 1, 2)}


def seeds_for(scale: str) -> tuple[int, ...]:
    return SEEDS[scale]


def seed_losses(ctx: Context, slug_format: str, seeds: tuple[int, ...]) -> dict[int, float]:
    """seed -> final eval loss of the runs named slug_format.format(seed) (NaN when a run is missing or diverged)."""
    t = ctx.table()
    return {s: final_loss(t, slug_format.format(s)) for s in seeds}


def finished_seeds(ctx: Context, slug_format: str, seeds: tuple[int, ...]) -> list[int]:
    """The seeds whose run slug_format.format(seed) is finished (done or diverged), in seed order."""
    done = set(ctx.finished().slug)
    return [s for s in seeds if slug_format.format(s) in done]


def diverged_seeds(ctx: Context, slug_format: str, seeds: tuple[int, ...]) -> list[int]:
    """The seeds whose run slug_format.format(seed) diverged, in seed order."""
    bad = set(ctx.finished().query("status == 'diverged'").slug)
    return [s for s in seeds if slug_format.format(s) in bad]


def final_by(sweep: pd.DataFrame, group: str, knob: str) -> dict[str, dict[str, float]]:
    """{group value: {knob value: final eval loss}} of a table of finished runs (one seed), for result.json."""
    return {g: {f"{x:g}": v for x, v in zip(d[knob].astype(float), d.final_eval_loss.astype(float))}
            for g, d in sweep.groupby(group)}


def final_loss(table: pd.DataFrame, slug: str) -> float:
    row = table[table.slug == slug]
    return float(row.final_eval_loss.iloc[0]) if len(row) and row.final_eval_loss.iloc[0] is not None else float("nan")


def select(plans: list[RunPlan], only: str | list[str] | None) -> set[str]:
    """The slugs to train: all, or those matching one of the globs in `only` (a glob matching none is an error)."""
    if not only:
        return {p.slug for p in plans}
    globs = [g.strip() for g in (only.split(",") if isinstance(only, str) else only) if g.strip()]
    for g in globs:
        if not any(fnmatch.fnmatchcase(p.slug, g) for p in plans):
            raise SigpropError(f"--only {g!r} matches no run of this recipe; accepted: globs over "
                               f"{', '.join(p.slug for p in plans[:6])}{', ...' if len(plans) > 6 else ''}")
    return {p.slug for p in plans if any(fnmatch.fnmatchcase(p.slug, g) for g in globs)}
