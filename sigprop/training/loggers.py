"""Experiment trackers: `train(..., log="tensorboard")` / `sigprop train --log wandb` send every record the run
folder gets (losses, lr, tokens/s, eval loss, each probe metric per layer, the gains) to TensorBoard or W&B.

    sigprop train --block sas --scale ci --out runs/sas --log tensorboard   # then: tensorboard --logdir runs
    WANDB_MODE=offline sigprop train --block sas --scale ci --out runs/sas --log wandb

The run folder stays the record (metrics.jsonl, probes.jsonl); a tracker is a view of it, written under the run
folder (<run>/tensorboard, <run>/wandb). A logger is two methods: `log_scalars(step, {tag: value})` and `close()`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Protocol

import pandas as pd

from sigprop.errors import SigpropError, choice_error

#: The accepted values of --log / log= (comma-separate to use both).
LOGGERS = ("none", "tensorboard", "wandb")
#: The package each tracker needs and the extra that installs it.
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
#: metrics.jsonl names -> tracker tags.
METRIC_TAGS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm", "tokens_per_s": "train/tokens_per_s",
               "eval_loss": "eval/loss", "tokens": "train/tokens"}


class Logger(Protocol):
    def log_scalars(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def parse_log(log: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """'tensorboard,wandb' -> ['tensorboard', 'wandb']; None / 'none' -> []. A bad name is one line naming the accepted ones;
    a tracker whose package is missing is one line naming the extra that installs it (checked now, before any training)."""
    names = [t.strip() for t in (log.split(",") if isinstance(log, str) else log or ()) if t.strip()]
    for name in names:
        if name not in LOGGERS:
            raise choice_error("logger", name, LOGGERS)
    names = [n for n in dict.fromkeys(names) if n != "none"]
    for name in names:
        _require(name)
    return names


def _require(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise SigpropError(f"--log {name} needs the {PACKAGES[name]} package: pip install 'sigprop[log]' (or {PACKAGES[name]})")


def _finite(values: dict[str, object]) -> dict[str, float]:
    """Plain finite floats only (a tracker cannot plot None, and NaN would break its axes)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def metric_scalars(rec: dict) -> dict[str, float]:
    """One metrics.jsonl record as tagged scalars (train/loss, train/lr, eval/loss, ...)."""
    return _finite({METRIC_TAGS[k]: v for k, v in rec.items() if k in METRIC_TAGS})


def probe_scalars(rows: pd.DataFrame) -> dict[str, float]:
    """Probe rows (source, layer, module, metric, head, value) as tagged scalars: `probe/cos_mean/layer_3`,
    `gain/beta_ff/layer_2`, a per-head row `.../head_1`, and the module's name appended where one layer has several
    (the update ratios of W_Q, W_K, ... in one block)."""
    if rows.empty:
        return {}
    base = rows.source.astype(str) + "/" + rows.metric.astype(str) + "/layer_" + rows.layer.astype(str)
    several = rows.assign(base=base).groupby("base")["module"].transform("nunique") > 1
    module = rows.module.astype(str).str.replace(r"^blocks\.\d+\.", "", regex=True)
    tag = base.where(~several, base + "/" + module)
    tag = tag.where(rows["head"] < 0, tag + "/head_" + rows["head"].astype(str))
    return _finite(dict(zip(tag, rows.value)))


class TensorBoardLogger:
    """Event files under <run>/tensorboard (torch.utils.tensorboard.SummaryWriter). A resume from step s purges the
    events past s, as the run's records are cut back (the replayed steps are logged once)."""

    def __init__(self, folder: Path, start: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=start + 1 if start else 0)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run under <run>/wandb; WANDB_MODE picks online (the default, needs `wandb login`), offline or disabled."""

    def __init__(self, folder: Path, name: str, config: dict):
        import wandb

        mode = os.environ.get("WANDB_MODE") or None
        self.run = wandb.init(dir=str(folder), name=name, config=config, mode=mode, project=os.environ.get("WANDB_PROJECT", "sigprop"))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Every chosen tracker behind the one interface (none chosen: calls do nothing)."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        if values:
            for lg in self.loggers:
                lg.log_scalars(step, values)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
        self.loggers = []


def open_loggers(names: list[str], folder: Path, name: str, config: dict, start: int = 0) -> Loggers:
    """The trackers `names` (from `parse_log`) writing under the run folder `folder`, from step `start` (a resume's)."""
    made: list[Logger] = []
    for n in names:
        made.append(TensorBoardLogger(folder, start) if n == "tensorboard" else WandbLogger(folder, name, config))
    return Loggers(made)
