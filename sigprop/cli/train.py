"""`sigprop train` and `sigprop compare`: thin wrappers over sigprop.training (options -> TrainConfig overrides)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from sigprop.cli.app import app, console, folder, pick_vocab, split_list, vocab_alias

# Options shared by both commands; None means "the scale's value".
_HELP = {
    "steps": "Optimiser steps.", "lr": "Peak learning rate (paper: 1e-3).", "batch": "Global batch in sequences.",
    "grad_accum": "Micro-batches per step.", "warmup": "Warm-up: fraction of steps (<1) or steps (>=1).",
    "schedule": "linear | constant | cosine decay after warm-up.", "seed": "Seed (model init and data order).",
    "depth": "Number of blocks L.", "width": "Model width d.", "heads": "Attention heads H.",
    "vocab": "BPE vocabulary size.", "seq_len": "Sequence length T.", "kind": "decoder (causal LM) | encoder (MLM).",
    "source": "Data: 'code' (stdlib), 'packages' (stdlib + site-packages), 'codeparrot', or a local .jsonl/.parquet path.",
    "max_bytes": "Cap on corpus bytes.", "precision": "fp32 | bf16 | auto.", "qk_lr_mult": "LR multiplier for W^Q, W^K.",
    "vp_lr_mult": "LR multiplier for W^V, W^P (Fig. 9).",
    "probe_every": "Probe signal propagation every N steps (0 = off).", "eval_every": "Eval loss every N steps.",
    "probe_grad": "Probes also record per-layer gradients (grad_*) and update-to-weight ratios.",
    "probe_branches": "Probes also measure each block's attention and MLP branch outputs (source attn_out / mlp_out).",
    "probe_outliers": "Probes also record the outlier-feature statistics and attention-sink shares (the sequel's).",
    "quant_eval": "The final eval also runs W8A8 fake-quantised (summary: final_eval_loss_w8a8).",
    "optimizer": "adamw (the paper's) | muon (torch's Muon on the blocks' matrices, AdamW on the rest).",
    "eval_batches": "Validation batches per eval.", "ckpt_every": "Checkpoint every N steps.",
    "keep_checkpoints": "Also keep N weight snapshots spread evenly from init to the last step, in <out>/checkpoints (sigprop analyze --run --all-checkpoints).",
    "log": "Also send the records to an experiment tracker: tensorboard | wandb (comma-separate for both; needs sigprop[log]).",
    "device": "auto | cpu | cuda | cuda:N.", "threads": "torch CPU threads (0 = default).",
    "diverge_loss_ratio": "Stop when the loss exceeds this x its running median (0 = off; default 3).",
    "diverge_grad_ratio": "Stop when the gradient norm exceeds this x its running median (0 = off; default 100).",
    "diverge_window": "Steps in the divergence guard's running median (default 50).",
}


def probe_note(summary: dict) -> str:
    """', probes 2.1% of wall time (one pass = 0.12 steps)' from a run summary; '' when the run took no probes."""
    frac, per_step = summary.get("probe_time_frac"), summary.get("probe_per_step")
    if not summary.get("probe_passes") or frac is None:
        return ""
    return f", probes {100 * frac:.1f}% of wall time" + (f" (one pass = {per_step:.2f} steps)" if per_step is not None else "")


def _overrides(**kw) -> dict:
    """CLI option names -> TrainConfig field names, dropping the ones not given."""
    rename = {"batch": "batch_size"}
    return {rename.get(k, k): v for k, v in kw.items() if v is not None}


@app.command("train")
def train_cmd(
    block: str = typer.Option(None, "--block", "-b", help="Block preset (pre-ln, sas, sas-p, ...); default pre-ln, or the run's on --resume."),
    scale: str = typer.Option(None, "--scale", "-s", help="ci (seconds) | demo (minutes; inside SAS/SAS-P's early plateau) | cpu (the long scale, 4x128 x 2,000 steps) | paper (GPU); default cpu, or the run's on --resume."),
    out: str = typer.Option(None, "--out", "-o", help="Run directory (default runs/<block>)."),
    sets: list[str] = typer.Option([], "--set", help="Override a block knob, e.g. --set beta_ff=0.2 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    steps: int = typer.Option(None, help=_HELP["steps"]), lr: float = typer.Option(None, help=_HELP["lr"]),
    batch: int = typer.Option(None, help=_HELP["batch"]), grad_accum: int = typer.Option(None, help=_HELP["grad_accum"]),
    warmup: float = typer.Option(None, help=_HELP["warmup"]), schedule: str = typer.Option(None, help=_HELP["schedule"]),
    seed: int = typer.Option(None, help=_HELP["seed"]), depth: int = typer.Option(None, help=_HELP["depth"]),
    width: int = typer.Option(None, help=_HELP["width"]), heads: int = typer.Option(None, help=_HELP["heads"]),
    vocab_size: int = typer.Option(None, "--vocab-size", help=_HELP["vocab"]), vocab: int = vocab_alias(), seq_len: int = typer.Option(None, help=_HELP["seq_len"]),
    kind: str = typer.Option(None, help=_HELP["kind"]), source: str = typer.Option(None, help=_HELP["source"]),
    max_bytes: int = typer.Option(None, help=_HELP["max_bytes"]), precision: str = typer.Option(None, help=_HELP["precision"]),
    qk_lr_mult: float = typer.Option(None, help=_HELP["qk_lr_mult"]), vp_lr_mult: float = typer.Option(None, help=_HELP["vp_lr_mult"]),
    probe_every: int = typer.Option(None, help=_HELP["probe_every"]), eval_every: int = typer.Option(None, help=_HELP["eval_every"]),
    probe_grad: bool = typer.Option(None, "--probe-grad/--no-probe-grad", help=_HELP["probe_grad"]),
    probe_branches: bool = typer.Option(None, "--probe-branches/--no-probe-branches", help=_HELP["probe_branches"]),
    probe_outliers: bool = typer.Option(None, "--probe-outliers/--no-probe-outliers", help=_HELP["probe_outliers"]),
    quant_eval: bool = typer.Option(None, "--quant-eval/--no-quant-eval", help=_HELP["quant_eval"]),
    optimizer: str = typer.Option(None, help=_HELP["optimizer"]),
    eval_batches: int = typer.Option(None, help=_HELP["eval_batches"]), ckpt_every: int = typer.Option(None, help=_HELP["ckpt_every"]),
    keep_checkpoints: int = typer.Option(None, "--keep-checkpoints", help=_HELP["keep_checkpoints"]),
    log: str = typer.Option(None, "--log", help=_HELP["log"]),
    device: str = typer.Option(None, help=_HELP["device"]), threads: int = typer.Option(None, help=_HELP["threads"]),
    diverge_loss_ratio: float = typer.Option(None, help=_HELP["diverge_loss_ratio"]),
    diverge_grad_ratio: float = typer.Option(None, help=_HELP["diverge_grad_ratio"]),
    diverge_window: int = typer.Option(None, help=_HELP["diverge_window"]),
) -> None:
    """Train one block (causal LM on the code corpus, or MLM with --kind encoder) into a run directory.

    Data-parallel: torchrun --nproc_per_node=2 -m sigprop train ... (gloo on CPU, NCCL on GPU).
    """
    from sigprop.training import train

    ov = _overrides(steps=steps, lr=lr, batch=batch, grad_accum=grad_accum, warmup=warmup, schedule=schedule, seed=seed,
                    depth=depth, width=width, heads=heads, vocab_size=pick_vocab(vocab_size, vocab), seq_len=seq_len, kind=kind, source=source,
                    max_bytes=max_bytes, precision=precision, qk_lr_mult=qk_lr_mult, vp_lr_mult=vp_lr_mult, probe_every=probe_every,
                    probe_grad=probe_grad, probe_branches=probe_branches, eval_every=eval_every, eval_batches=eval_batches, ckpt_every=ckpt_every, device=device, threads=threads,
                    probe_outliers=probe_outliers, quant_eval=quant_eval, optimizer=optimizer, compile=compile, diverge_loss_ratio=diverge_loss_ratio, diverge_grad_ratio=diverge_grad_ratio,
                    diverge_window=diverge_window, keep_checkpoints=keep_checkpoints)
    if not resume:
        block, scale = block or "pre-ln", scale or "cpu"
    run = train(block, scale, folder("--out", out) or Path("runs") / (block or "run"), sets=tuple(sets), resume=resume, overwrite=overwrite, quiet=quiet, log=log, **ov)
    if run.status == "interrupted":
        sys.exit(130)
    if not quiet and run.summary and run.rank == 0:  # under torchrun only rank 0 evaluates and reports
        s = run.summary
        ev = "–" if s.get("final_eval_loss") is None else f"{s['final_eval_loss']:.4f}"
        tps = "–" if s.get("tokens_per_s") is None else f"{s['tokens_per_s']:,.0f}"
        w8 = f" (W8A8 {s['final_eval_loss_w8a8']:.4f})" if s.get("final_eval_loss_w8a8") is not None else ""
        console.print(f"[bold]{s['block']}[/]: {s['step']} steps, eval loss {ev}{w8}, {s['params'] / 1e6:.2f}M params, "
                      f"{tps} tok/s, {s['wall_time_s'] / 60:.1f} min{probe_note(s)} -> {run.path}", highlight=False)


@app.command("compare")
def compare_cmd(
    blocks: str = typer.Option("pre-ln,sas,sas-p,v-skipinit", "--blocks", "-b", help="Comma-separated presets."),
    scale: str = typer.Option("cpu", "--scale", "-s", help="ci (seconds) | demo (minutes; inside SAS/SAS-P's early plateau) | cpu (the long scale, 4x128 x 2,000 steps) | paper (GPU)."),
    out: str = typer.Option("runs/cmp", "--out", "-o", help="Folder: one run per block, summary.csv, figures."),
    sets: list[str] = typer.Option([], "--set", help="Override a knob in every block (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain every block instead of reusing/resuming."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    steps: int = typer.Option(None, help=_HELP["steps"]), lr: float = typer.Option(None, help=_HELP["lr"]),
    batch: int = typer.Option(None, help=_HELP["batch"]), warmup: float = typer.Option(None, help=_HELP["warmup"]),
    schedule: str = typer.Option(None, help=_HELP["schedule"]), seed: int = typer.Option(None, help=_HELP["seed"]),
    depth: int = typer.Option(None, help=_HELP["depth"]), width: int = typer.Option(None, help=_HELP["width"]),
    heads: int = typer.Option(None, help=_HELP["heads"]), precision: str = typer.Option(None, help=_HELP["precision"]),
    probe_every: int = typer.Option(None, help=_HELP["probe_every"]), eval_every: int = typer.Option(None, help=_HELP["eval_every"]),
    probe_grad: bool = typer.Option(None, "--probe-grad/--no-probe-grad", help=_HELP["probe_grad"]),
    probe_branches: bool = typer.Option(None, "--probe-branches/--no-probe-branches", help=_HELP["probe_branches"]),
    device: str = typer.Option(None, help=_HELP["device"]), threads: int = typer.Option(None, help=_HELP["threads"]),
) -> None:
    """Train several blocks with the same data order and seed; write summary.csv and loss-vs-step/time figures."""
    from sigprop.training.compare import compare

    ov = _overrides(steps=steps, lr=lr, batch=batch, warmup=warmup, schedule=schedule, seed=seed, depth=depth, width=width,
                    heads=heads, precision=precision, probe_every=probe_every, probe_grad=probe_grad, probe_branches=probe_branches, eval_every=eval_every,
                    device=device, threads=threads)
    out = folder("--out", out)
    table = compare(split_list(blocks), scale, out, sets=tuple(sets), overwrite=overwrite, quiet=quiet, **ov)
    t = Table(title=f"sigprop compare ({scale}) -> {out}")
    for col in ("block", "params", "final eval loss", "tokens/s", "train time", "status"):
        t.add_column(col, justify="left" if col in ("block", "status") else "right")
    for _, r in table.iterrows():
        ev = "-" if r["final_eval_loss"] is None or r["final_eval_loss"] != r["final_eval_loss"] else f"{r['final_eval_loss']:.4f}"
        t.add_row(r["block"], f"{r['params'] / 1e6:.2f}M", ev, f"{r['tokens_per_s']:,.0f}", f"{r['train_time_s'] / 60:.1f} min", r["status"])
    console.print(t)
