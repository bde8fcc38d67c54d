"""A decoder LM (GPT, causal) or an encoder with an MLM head (BERT, non-causal) around sigprop blocks."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from sigprop.blocks.attention import Attention, DenseMatrix, draw_, normal_linear, tie_valproj_init
from sigprop.blocks.block import Block, unit
from sigprop.blocks.norms import make_norm
from sigprop.blocks.spec import BlockSpec, get_spec
from sigprop.errors import SigpropError, check_choice, check_positive


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the model around the blocks. Paper scale: depth 18, width 768, heads 12, context 128."""

    depth: int = 6
    width: int = 256
    heads: int = 4
    vocab_size: int = 8192
    context: int = 128
    kind: str = "decoder"  # decoder (causal LM) | encoder (MLM)

    def __post_init__(self) -> None:
        for name in ("depth", "width", "heads", "vocab_size", "context"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SigpropError(f"{name} must be an integer, got {value!r}")
            check_positive(name, value)
        if self.width % self.heads:
            raise SigpropError(f"width {self.width} is not divisible by heads {self.heads}")
        check_choice("model kind", self.kind, ("decoder", "encoder"))

    @property
    def causal(self) -> bool:
        return self.kind == "decoder"

    def replace(self, **kw: object) -> ModelConfig:
        return dataclasses.replace(self, **kw)  # type: ignore[arg-type]


def embedding(n: int, d: int) -> nn.Embedding:
    """An n x d nn.Embedding; on the meta device only its shape (see attention.draw_)."""
    if torch.get_default_device().type == "meta":
        return nn.Embedding(n, d, _weight=torch.empty(n, d))  # a given weight skips reset_parameters' draw
    return nn.Embedding(n, d)


class Embedding(nn.Module):
    """Token + learned position embeddings; its output is 'layer 0' for the probes."""

    def __init__(self, cfg: ModelConfig, std: float, sphere: bool = False, scale: str = "none"):
        super().__init__()
        # nn.Embedding's own N(0, 1) draws stay before ours, so the RNG stream (every seeded run) is unchanged
        self.wte, self.wpe = embedding(cfg.vocab_size, cfg.width), embedding(cfg.context, cfg.width)
        draw_(nn.init.normal_, self.wte.weight, std=std)
        draw_(nn.init.normal_, self.wpe.weight, std=std)
        self.sphere = sphere  # nGPT: the stream starts on the unit sphere
        # DyT's LLaMA recipe: one learnable scalar sqrt(d) on the input embeddings (the tied head reads wte unscaled)
        self.scale = nn.Parameter(torch.tensor(float(cfg.width) ** 0.5)) if scale == "sqrt-width" else None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        if self.scale is not None:
            x = x * self.scale.to(x.dtype)
        return unit(x) if self.sphere else x


def check_tokens(idx: torch.Tensor, vocab_size: int, name: str) -> None:
    """Token ids: an integer (B, T) tensor with values in [0, vocab_size). The range is checked on CPU only
    (on CUDA an out-of-range id is already a device-side error, and the check would cost a sync per step)."""
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        got = f"{idx.dtype} of shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise SigpropError(f"{name} must be integer token ids of shape (batch, seq_len), got {got}")
    if idx.device.type == "cpu" and idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            raise SigpropError(f"{name} holds token ids in [{lo}, {hi}]; accepted: 0 .. {vocab_size - 1} (the model's vocab_size)")


class Transformer(nn.Module, PyTorchModelHubMixin, library_name="sigprop"):
    """Embedding -> depth x Block -> final norm -> tied LM/MLM head.

    forward(idx, targets=None, key_mask=None) -> (logits, loss); targets use -100 for "ignore"
    (the MLM convention). Decoder targets are next tokens, already shifted by the caller.
    `save_pretrained(folder)` / `Transformer.from_pretrained(folder)` (huggingface_hub's mixin): config.json holds
    the spec's fields and the ModelConfig's, model.safetensors the weights.
    """

    def __init__(self, spec: BlockSpec, cfg: ModelConfig):
        super().__init__()
        self.spec, self.config = spec, cfg
        sphere = spec.norm_position == "sphere"
        self.embed = Embedding(cfg, spec.init_std, sphere, spec.embed_scale)
        self.blocks = nn.ModuleList(
            Block(spec, cfg.width, cfg.heads, cfg.depth, layer, cfg.causal) for layer in range(cfg.depth)
        )
        tie_valproj_init([(b.attn.value, b.attn.proj) for b in self.blocks], spec.tie_valproj_init)
        # The official code keeps a LayerNorm before the head when blocks have no norm.
        final = spec.final_norm if spec.final_norm != "auto" else spec.norm if spec.norm != "none" else "layer"
        alpha_f = spec.norm_alpha if spec.norm_alpha_final is None else spec.norm_alpha_final
        self.ln_f = make_norm(final, cfg.width, spec.norm_eps, alpha_f, spec.derf_shift)
        if sphere:  # nGPT: states stay on the sphere (no final norm); logits scaled per token, s_z = |p| / base
            self.ln_f = nn.Identity()
            self.s_z = nn.Parameter(torch.full((cfg.vocab_size,), cfg.width**-0.5))
        if cfg.kind == "encoder":  # BERT-style MLM transform before the tied decoder
            self.mlm_dense = normal_linear(cfg.width, cfg.width, spec.init_std)
            self.mlm_norm = make_norm(final, cfg.width, spec.norm_eps, alpha_f, spec.derf_shift)
        if sphere:
            self.renormalize_()

    @classmethod
    def _from_pretrained(cls, *, spec: dict | BlockSpec, cfg: dict | ModelConfig, strict: bool = True, **kw) -> Transformer:
        """The mixin's loader, with config.json's dicts turned back into a BlockSpec and a ModelConfig (its own
        decoding reads the annotations, which are strings here) and every weight required (strict)."""
        if isinstance(spec, dict):
            spec = BlockSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        cfg = ModelConfig(**cfg) if isinstance(cfg, dict) else cfg
        return super()._from_pretrained(spec=spec, cfg=cfg, strict=strict, **kw)

    def features(self, idx: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (B, T, d) after the last norm."""
        check_tokens(idx, self.config.vocab_size, "idx")
        T = idx.shape[1]
        if T > self.config.context:
            raise SigpropError(f"sequence length {T} exceeds the model's context {self.config.context}")
        x = self.embed(idx)
        v1 = None
        for block in self.blocks:
            x = block(x, key_mask, v1)
            if v1 is None and self.spec.value_residual is not None:
                v1 = block.attn.first_values  # ResFormer: every later block mixes in block 1's values
        return self.ln_f(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.features(idx, key_mask)
        if targets is not None and (targets.shape != idx.shape or targets.is_floating_point()):
            raise SigpropError(f"targets must be integer token ids shaped like idx {tuple(idx.shape)}, got {targets.dtype} {tuple(targets.shape)}")
        if self.config.kind == "encoder":
            x = self.mlm_norm(F.gelu(self.mlm_dense(x)))
        logits = x @ self.embed.wte.weight.T  # tied head
        if self.spec.norm_position == "sphere":
            logits = logits * (self.s_z.abs() * self.config.width**0.5).to(logits.dtype)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def kernels(self, K: torch.Tensor, ctx) -> list[torch.Tensor]:
        """The token kernels after 0..L blocks at init from the embeddings' kernel K, each block by its own map (`Block.kernel`)
        in forward order; `ctx` (`sigprop.studies.theory.KernelContext`) says how a random-W^Q softmax enters and carries state."""
        kernels = [K]
        for block in self.blocks:
            kernels.append(block.kernel(kernels[-1], ctx))
        return kernels

    @torch.no_grad()
    def renormalize_(self) -> None:
        """nGPT: every matrix's rows along the embedding dimension back on the unit sphere (after each optimiser step):
        maps out of the stream (W^Q, W^K, W^V, gate, MLP in) per output unit, maps into it (W^O, MLP out) per input unit."""
        if self.embed.wte.weight.is_meta:
            return
        unit_ = lambda w, dim: w.copy_(w / w.norm(dim=dim, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny))  # noqa: E731
        unit_(self.embed.wte.weight, 1)
        for block in self.blocks:
            attn = block.attn
            for lin in (attn.w_q, attn.w_k, attn.w_gate, block.mlp.w_in):
                if lin is not None:
                    unit_(lin.weight, 1)  # nn.Linear (out, in): the input is the stream
            unit_(block.mlp.w_out.weight, 0)  # (d, hidden): each hidden unit's write into the stream
            if isinstance(attn.value, DenseMatrix):
                unit_(attn.value.weight, 0)  # x @ W, W (d, d): columns read the stream
            if isinstance(attn.proj, DenseMatrix):
                unit_(attn.proj.weight, 1)  # rows write into it

    # -- what probes read (the same protocol as an adapter of a foreign model; sigprop.probes.points) ----------
    def probe_points(self) -> dict[str, nn.Module]:
        """{canonical probe point: the module whose output it is}, block by block in forward order. Branch and attention
        points are the modules of the same path (blocks.{l}.attn.hook_pattern is module blocks.{l}.attn.hook_pattern);
        the stream points are the block modules themselves (resid_post of block l = resid_pre of block l + 1)."""
        points: dict[str, nn.Module] = {}
        for l, block in enumerate(self.blocks):
            points[f"blocks.{l}.hook_resid_pre"] = self.embed if l == 0 else self.blocks[l - 1]
            points[f"blocks.{l}.hook_attn_out"] = block.hook_attn_out
            points[f"blocks.{l}.attn.hook_pattern"] = block.attn.hook_pattern  # softmax probabilities A(X)
            if block.spec.attention != "softmax":  # shaped / value-skipinit: alpha I + beta A (- gamma C)
                points[f"blocks.{l}.attn.hook_matrix"] = block.attn.hook_matrix
            points[f"blocks.{l}.hook_mlp_out"] = block.hook_mlp_out
            points[f"blocks.{l}.hook_resid_post"] = block
        return points

    def probe_weights(self) -> dict[str, nn.Parameter]:
        """{canonical weight name: trainable matrix} (W_V / W_O: the trainable part dW of Eq. 6 when reparameterised)."""
        out: dict[str, nn.Parameter] = {}
        for l, block in enumerate(self.blocks):
            attn = block.attn
            mats = {"attn.W_Q": attn.w_q.weight, "attn.W_K": attn.w_k.weight, "attn.W_V": _trainable(attn.value),
                    "attn.W_O": _trainable(attn.proj), "mlp.W_in": block.mlp.w_in.weight, "mlp.W_out": block.mlp.w_out.weight}
            out.update({f"blocks.{l}.{k}": p for k, p in mats.items() if p is not None and p.requires_grad})
        return out

    @contextlib.contextmanager
    def attention_patterns(self) -> Iterator[None]:
        """Run attention on its explicit path (which passes the T x T matrices through hook points) inside the block."""
        attns = [m for m in self.modules() if isinstance(m, Attention)]
        before = [a.explicit for a in attns]
        for a in attns:
            a.explicit = True
        try:
            yield
        finally:
            for a, flag in zip(attns, before):
                a.explicit = flag

    def probe_gains(self) -> list[dict[str, torch.Tensor]]:
        """Per block (layer 1..L) {gain name: scalar or per-head tensor}, named as in the paper."""
        return [block.gains() for block in self.blocks]

    def num_params(self, embeddings: bool = True) -> int:
        """Trainable parameters (fixed buffers such as identity V/P or fixed gains are not counted)."""
        n = sum(p.numel() for p in self.parameters() if p.requires_grad)
        if not embeddings:
            n -= self.embed.wte.weight.numel() + self.embed.wpe.weight.numel()
        return n


def _trainable(matrix: nn.Module | None) -> nn.Parameter | None:
    """The trainable matrix of a value/projection: W (dense), dW (Eq. 6 reparam), None (identity)."""
    if matrix is None:
        return None
    return matrix.delta if hasattr(matrix, "delta") else matrix.weight


def build_model(block: str | BlockSpec = "pre-ln", config: ModelConfig | None = None, *, sets=(), seed: int | None = None, **sizes) -> Transformer:
    """Build a model from a preset name or spec: `build_model("sas", depth=18, width=768, heads=12)`."""
    spec = get_spec(block, sets)
    cfg = (config or ModelConfig()).replace(**sizes) if sizes else (config or ModelConfig())
    if seed is not None:
        torch.manual_seed(seed)
    return Transformer(spec, cfg)


def param_groups(model: nn.Module, weight_decay: float = 0.1) -> list[dict]:
    """AdamW groups as in the paper: decay on matrices and embeddings; none on gains, norms, biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
