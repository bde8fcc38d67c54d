"""A run's block and config: new from a preset and a scale, or on resume the stored ones, which anything
given must agree with (runtime fields such as threads or probe cadence may change)."""

from __future__ import annotations

from sigprop.blocks import BlockSpec, get_spec
from sigprop.errors import SigpropError
from sigprop.runs import CONFIG
from sigprop.training.config import RUNTIME_FIELDS, TrainConfig, get_config


def spec_record(spec: BlockSpec) -> dict:
    return {"name": spec.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in spec.knobs().items()}}


def spec_from_record(rec: dict) -> BlockSpec:
    knobs = {k: tuple(v) if isinstance(v, list) else v for k, v in rec.items()}
    return BlockSpec(**knobs)


def stored_run(stored: dict) -> tuple[BlockSpec, TrainConfig]:
    """The block and config recorded in a run's config.json; a damaged or foreign record is one line."""
    try:
        return spec_from_record(stored["spec"]), TrainConfig(**stored["train"])
    except SigpropError as e:
        raise SigpropError(f"the run's {CONFIG} holds an invalid setting ({e}); restart the run with --overwrite") from None
    except (KeyError, TypeError, AttributeError) as e:
        what = f"no {e.args[0]!r} entry" if isinstance(e, KeyError) else str(e).split("\n")[0]
        raise SigpropError(f"the run's {CONFIG} is not a sigprop run record ({what}); restart the run with --overwrite") from None


def resolve(block: str | BlockSpec | None, scale: str | TrainConfig | None, sets, overrides: dict, stored: dict | None) -> tuple[BlockSpec, TrainConfig]:
    """The spec and config of this run. On resume the stored ones are the base; anything given must agree."""
    if stored is None:
        spec = get_spec(block if block is not None else "pre-ln", sets)
        return spec, get_config(scale if scale is not None else "cpu", **overrides)
    old_spec, old_cfg = stored_run(stored)
    spec = get_spec(block, sets) if block is not None else old_spec.with_sets(sets)
    cfg = get_config(scale, **overrides) if scale is not None else old_cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    if spec.knobs() != old_spec.knobs():
        diff = ", ".join(f"{k}={v!r} (run has {old_spec.knobs()[k]!r})" for k, v in spec.diff(old_spec).items())
        raise SigpropError(f"cannot resume: the block differs from the stored run ({diff}); accepted: the same block, or --overwrite")
    a, b = cfg.to_dict(), old_cfg.to_dict()
    bad = [k for k in a if k not in RUNTIME_FIELDS and k != "scale" and a[k] != b[k]]
    if bad:
        diff = ", ".join(f"{k}={a[k]!r} (run has {b[k]!r})" for k in bad)
        raise SigpropError(f"cannot resume: {diff}; accepted: the run's own settings, or --overwrite")
    return spec, cfg.replace(scale=old_cfg.scale)
