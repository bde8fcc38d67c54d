"""Checkpoints: model, optimiser, step and every RNG state in one file, written atomically.

The learning-rate schedule is a pure function of the step and the data order a pure function of
(split, step, seed), so (model, optimiser, step) is all the state a bit-for-bit resume needs; RNG
states are saved too so anything random added later (dropout, MLM masks) resumes exactly as well.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sigprop.errors import SigpropError
from sigprop.runs import RunDir, atomic_write_bytes, naming

FORMAT = "sigprop-checkpoint-1"


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states in a form torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: object) -> object:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, config: dict,
                    extra: dict | None = None, rng: dict | None = None) -> None:
    """Write the training state after `step` completed updates (temp file + os.replace: never half written).
    `rng`: the RNG states as taken at that step (default: now)."""
    buf = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "step": int(step),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng if rng is not None else rng_state(),
            "config": config,
            "extra": extra or {},
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint; a missing, corrupt or foreign file is a one-line SigpropError."""
    path = Path(path)
    if not path.exists():
        raise SigpropError(f"no checkpoint at {str(path)!r}; start the run without --resume (or with --overwrite)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, pickle.UnpicklingError) or reason.startswith("Weights only load failed"):
            reason = "not a file of tensors and plain data"  # torch's own text is advice on weights_only
        raise SigpropError(f"corrupt checkpoint {str(path)!r} ({reason[:120]}); restart the run with --overwrite") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise SigpropError(f"{str(path)!r} is not a sigprop checkpoint (format {FORMAT!r} expected); restart the run with --overwrite")
    return ck


def restore(ck: dict, model: nn.Module, optimizer: torch.optim.Optimizer, path: str | Path = "checkpoint") -> int:
    """Load model and optimiser state (and RNG) from a checkpoint; returns the step to continue from."""
    try:
        model.load_state_dict(ck["model"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(s.strip() for s in first[:2])[:200]
        raise SigpropError(f"checkpoint {str(path)!r} does not fit this model ({detail}); restart with --overwrite") from None
    try:
        optimizer.load_state_dict(ck["optimizer"])
    except (ValueError, KeyError) as e:
        raise SigpropError(f"checkpoint {str(path)!r} has an incompatible optimiser state ({e}); restart with --overwrite") from None
    set_rng_state(ck["rng"])
    return int(ck["step"])


def keep_steps(steps: int, n: int) -> list[int]:
    """The steps of a thinned series of `n` kept snapshots: evenly spaced from init (step 0) to the last step,
    both included (n = 1: the last step alone; fewer when the run has fewer steps than n - 1)."""
    if n <= 0:
        return []
    if n == 1:
        return [steps]
    return sorted({round(i * steps / (n - 1)) for i in range(n)})


def save_kept(run: RunDir, model: nn.Module, step: int) -> Path:
    """Keep the weights at `step` as a `save_pretrained` folder (config.json + model.safetensors), written into a
    temporary folder and renamed, so a reader never finds half a snapshot."""
    final = run.kept_path(step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        with naming(final):
            model.save_pretrained(tmp)
            if final.exists():  # the same step written again (a resume from before it)
                shutil.rmtree(final)
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_kept(folder: str | Path, model: nn.Module) -> nn.Module:
    """Load a kept snapshot's weights into `model` (every tensor must fit: strict)."""
    from safetensors.torch import load_model

    path = Path(folder) / "model.safetensors"
    if not path.exists():
        raise SigpropError(f"no weights at {str(path)!r}; accepted: a snapshot written by sigprop train --keep-checkpoints")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise SigpropError(f"corrupt snapshot {str(path)!r} ({str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__})") from None
    if missing or unexpected:
        raise SigpropError(f"snapshot {str(path)!r} does not fit the run's model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return model
