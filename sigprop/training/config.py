"""TrainConfig: every training setting in one frozen dataclass, and the named scales ci / cpu / demo / paper (one
table: train, compare, sweep and reproduce read the same names).

A scale is a TrainConfig; any field can be overridden by name (`--steps 200`, `train(..., lr=3e-4)`).
The paper's settings (paper.md §3.1): AdamW (0.9, 0.999), eps 1e-8, peak lr 1e-3, 5% linear warm-up then
linear decay, weight decay 0.1 on matrices and embeddings only, grad clip 1.0, batch 128 x T=128.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sigprop.errors import SigpropError, check_choice, check_positive, choice_error

SCHEDULES = ("linear", "constant", "cosine")
PRECISIONS = ("fp32", "bf16", "auto")
KINDS = ("decoder", "encoder")
#: adamw: the paper's AdamW (a diagonal preconditioner). muon: torch's Muon (orthogonalised momentum, a
#: non-diagonal preconditioner) on the blocks' 2-D matrices, AdamW on embeddings, gains and norms (the outlier
#: sequel's question: does the optimiser's diagonal preconditioning create outlier features?)
OPTIMIZERS = ("adamw", "muon")


@dataclass(frozen=True)
class TrainConfig:
    """Model size, data, optimiser, schedule and cadence of one training run."""

    scale: str = "custom"
    # --- model around the blocks ---
    depth: int = 6
    width: int = 256
    heads: int = 4
    kind: str = "decoder"  # decoder: causal LM | encoder: MLM (BERT)
    # --- data (sigprop.data.load_data) ---
    source: str = "code"
    vocab_size: int = 8192
    seq_len: int = 128
    max_bytes: int | None = None  # cap on corpus bytes (the ci scale builds a tiny corpus)
    mlm_p: float = 0.25  # MLM mask probability (paper's Crammed BERT)
    # --- optimisation ---
    optimizer: str = "adamw"
    steps: int = 600
    batch_size: int = 32  # global batch (sequences per optimiser step)
    grad_accum: int = 1  # micro-batches per step (per process)
    lr: float = 1e-3
    min_lr: float = 0.0  # end of the linear decay
    warmup: float = 0.05  # fraction of steps (or an integer number of steps if >= 1)
    schedule: str = "linear"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 = no clipping
    qk_lr_mult: float = 1.0  # learning-rate multiplier for W^Q and W^K (plateau study)
    vp_lr_mult: float = 1.0  # learning-rate multiplier for W^V and W^P (dense weights, or Eq. 6's dW): Fig. 9
    seed: int = 0
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 where it is faster: CUDA, or CPU at width >= 256)
    # --- cadence ---
    eval_every: int = 50
    eval_batches: int = 8  # batches of `batch_size` validation rows, the same ones at every eval
    probe_every: int = 25  # 0 = no probes during training
    probe_batch: int = 8
    probe_grad: bool = False  # probes also record gradients (grad_*) and update-to-weight ratios per layer
    probe_branches: bool = False  # probes also measure each block's attention and MLP branch outputs (source attn_out / mlp_out)
    probe_outliers: bool = False  # probes also record the outlier-feature statistics and attention-sink shares (source outliers)
    quant_eval: bool = False  # the final eval also runs W8A8 fake-quantised (summary: final_eval_loss_w8a8)
    ckpt_every: int = 100
    keep_checkpoints: int = 0  # also keep N weight snapshots spread evenly from init to the last step (`sigprop analyze --run`)
    # --- divergence guard (sigprop.training.guard): stop when a step's loss / pre-clip gradient norm exceeds
    # ratio x its median over the last `diverge_window` steps (0 = that test off; NaN/inf always stops) ---
    diverge_loss_ratio: float = 3.0
    diverge_grad_ratio: float = 100.0
    diverge_window: int = 50
    # --- runtime only (may change on --resume) ---
    device: str = "auto"
    compile: bool = False
    threads: int = 0  # torch CPU threads for this process (0 = torch's default)

    def __post_init__(self) -> None:
        for name in ("depth", "width", "heads", "vocab_size", "seq_len", "steps", "batch_size", "grad_accum",
                     "eval_batches", "probe_batch", "ckpt_every", "eval_every", "diverge_window"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise SigpropError(f"{name} must be an integer, got {v!r}")
            check_positive(name, v)
        if not isinstance(self.threads, int) or self.threads < 0:
            raise SigpropError(f"threads must be an integer >= 0 (0 = torch's default), got {self.threads!r}")
        if not isinstance(self.keep_checkpoints, int) or isinstance(self.keep_checkpoints, bool) or self.keep_checkpoints < 0:
            raise SigpropError(f"keep_checkpoints must be an integer >= 0 (0 = only the resumable one), got {self.keep_checkpoints!r}")
        if not isinstance(self.probe_every, int) or self.probe_every < 0:
            raise SigpropError(f"probe_every must be an integer >= 0 (0 = off), got {self.probe_every!r}")
        for name in ("lr", "qk_lr_mult", "vp_lr_mult", "eps"):
            check_positive(name, getattr(self, name))
        for name in ("min_lr", "weight_decay", "grad_clip", "warmup"):
            if getattr(self, name) < 0:
                raise SigpropError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("diverge_loss_ratio", "diverge_grad_ratio"):
            v = getattr(self, name)
            if not (v == 0 or v > 1):
                raise SigpropError(f"{name} must be 0 (off) or above 1, got {v!r}")
        if self.warmup_steps > self.steps:
            raise SigpropError(
                f"warmup of {self.warmup_steps} steps is longer than the run's {self.steps} steps (the learning rate would "
                f"never reach its peak); accepted: a fraction < 1 of the steps, or at most {self.steps} steps"
            )
        if not 0 < self.mlm_p < 1:
            raise SigpropError(f"mlm_p must be in (0, 1), got {self.mlm_p!r}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise SigpropError(f"beta1, beta2 must be in [0, 1), got {self.beta1!r}, {self.beta2!r}")
        if self.width % self.heads:
            raise SigpropError(f"width {self.width} is not divisible by heads {self.heads}")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("model kind", self.kind, KINDS)
        if self.batch_size % self.grad_accum:
            raise SigpropError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup) if self.warmup >= 1 else int(round(self.warmup * self.steps))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def replace(self, **overrides: object) -> TrainConfig:
        """A copy with some fields changed; an unknown field is a one-line error."""
        names = field_names()
        for k in overrides:
            if k not in names:
                raise choice_error("training option", k, names)
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Fields that may differ when a run is resumed (they do not change the numbers on CPU).
RUNTIME_FIELDS = ("device", "compile", "threads", "eval_every", "probe_every", "ckpt_every",
                  "diverge_loss_ratio", "diverge_grad_ratio", "diverge_window", "probe_grad", "probe_branches",
                  "keep_checkpoints")
#: Fields added after runs were first recorded: a run's id (`recipes.base.run_id`) leaves each out while it
#: holds its default, so adding a field never orphans the committed runs that predate it.
#: probe_outliers and quant_eval change no number of training but what a run records (outlier probes, the W8A8 loss,
#: which needs the final weights): a run with them is a different record from one without, so they are hashed.
HASH_OMIT_AT_DEFAULT: tuple[str, ...] = ("vp_lr_mult", "optimizer", "probe_outliers", "quant_eval")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


SCALES: dict[str, TrainConfig] = {
    # seconds: the test suite's scale (tiny corpus, tiny model, fp32 so results are exact, 1 thread: a 64-wide
    # model gains nothing from more and must not fight other processes for cores)
    "ci": TrainConfig(
        scale="ci", depth=2, width=64, heads=2, vocab_size=512, seq_len=32, max_bytes=1_000_000,
        steps=20, batch_size=8, eval_every=10, eval_batches=2, probe_every=10, probe_batch=4,
        ckpt_every=10, precision="fp32", warmup=0.1, threads=1,
    ),
    # the long cpu scale: where the paper's per-step claims are decided (figures/README.md) -- 4x128, V=4096, T=128,
    # batch 32, 2,000 steps (8.2M tokens), peak LR 4e-3 (the catch-up grid's best for Pre-LN, SAS and SAS-P at this
    # size), fp32; 17-48 min per run on one CPU thread depending on the CPU. SAS and SAS-P match Pre-LN per step here.
    "cpu": TrainConfig(
        scale="cpu", depth=4, width=128, heads=4, vocab_size=4096, seq_len=128, steps=2000, batch_size=32, lr=4e-3,
        eval_every=50, eval_batches=8, probe_every=100, probe_batch=4, ckpt_every=200, precision="fp32",
    ),
    # minutes: a demo of the machinery at 6x256 for 600 steps. It ends INSIDE SAS's and SAS-P's early plateau (they
    # catch Pre-LN up only later: figures/README.md, the catch-up study), so it cannot answer the paper's question
    "demo": TrainConfig(
        scale="demo", depth=6, width=256, heads=4, vocab_size=8192, seq_len=128, steps=600, batch_size=32,
        eval_every=50, eval_batches=8, probe_every=25, probe_batch=8, ckpt_every=100,
    ),
    # the paper's CodeParrot setting (paper.md §3.1); needs a GPU
    "paper": TrainConfig(
        scale="paper", depth=18, width=768, heads=12, vocab_size=50000, seq_len=128, steps=40000,
        batch_size=128, grad_accum=4, eval_every=500, eval_batches=16, probe_every=500, probe_batch=16,
        ckpt_every=1000,
    ),
}


def get_config(scale: str | TrainConfig = "cpu", **overrides: object) -> TrainConfig:
    """A named scale (or a config) with overrides applied; `None` overrides are ignored."""
    if isinstance(scale, TrainConfig):
        base = scale
    else:
        if scale not in SCALES:
            raise choice_error("scale", scale, SCALES)
        base = SCALES[scale]
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})
