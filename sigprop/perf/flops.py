"""Model FLOPs per token of any sigprop model, counted from its module structure (no tracing).

Used by `sigprop bench` (the FLOP ideal and MFU) and by the recipes' budget (hours from FLOPs). Cross-checked
against `torch.utils.flop_counter` in tests/test_bench.py.
"""

from __future__ import annotations

import torch
from torch import nn

from sigprop.blocks.attention import Attention, DenseMatrix, ReparamMatrix
from sigprop.blocks.model import Transformer, build_model
from sigprop.errors import check_choice

MODES = ("train", "infer")
#: model FLOPs per second of one CPU thread in fp32 when no finished run calibrates it (4x128 fp32 runs here: ~1.9e10)
CPU_THREAD_RATE = 1.9e10
#: bf16 autocast on a CPU without native bf16 is emulated: measured ~0.6x fp32 throughput (benchmarks/README.md)
BF16_SLOWDOWN = 1.6


def config_flops_per_token(block, cfg) -> float:
    """Training FLOPs per token of `block` at a TrainConfig's size (6N + attention), counted on a meta model."""
    with torch.device("meta"):
        model = build_model(block, depth=cfg.depth, width=cfg.width, heads=cfg.heads, vocab_size=cfg.vocab_size,
                            context=cfg.seq_len, kind=cfg.kind)
    return model_flops_per_token(model, cfg.seq_len, "train")


def matmul_flops(model: nn.Module) -> tuple[float, float]:
    """Forward matmul FLOPs per token, split into (trainable weight, frozen weight).

    Identity V/P are absent modules and cost nothing; a reparameterised matrix (Eq. 6) multiplies by
    dW (trainable) and, when W_init is orthogonal rather than I, by W_init (frozen).
    """
    trainable = frozen = 0.0
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            f = 2.0 * mod.in_features * mod.out_features
            trainable, frozen = (trainable + f, frozen) if mod.weight.requires_grad else (trainable, frozen + f)
        elif isinstance(mod, DenseMatrix):
            trainable += 2.0 * mod.weight.numel()
        elif isinstance(mod, ReparamMatrix):
            trainable += 2.0 * mod.delta.numel()
            if not mod.identity_init:
                frozen += 2.0 * mod.w_init.numel()
    if isinstance(model, Transformer):  # the tied LM/MLM head: logits = x @ wte^T
        trainable += 2.0 * model.embed.wte.weight.numel()
    return trainable, frozen


def attention_keys(seq: int, causal: bool) -> float:
    """Average number of keys a query attends to: (T + 1) / 2 under a causal mask, else T."""
    return (seq + 1) / 2 if causal else float(seq)


def model_flops_per_token(model: nn.Module, seq: int, mode: str = "train") -> float:
    """Model FLOPs per token of one step (no activation recomputation counted).

    forward: 2 x (matmul weights) + per attention layer 4 d T_keys (Q K^T and A V);
    train:   + backward = 2 x forward for trainable matmuls and attention, 1 x for frozen weights
             (their input gradient only). This is the "6N + attention" of Kaplan/PaLM, per block.
    """
    check_choice("mode", mode, MODES)
    trainable, frozen = matmul_flops(model)
    attn = sum(
        4.0 * m.width * attention_keys(seq, m.causal) for m in model.modules() if isinstance(m, Attention)
    )
    forward = trainable + frozen + attn
    if mode == "infer":
        return forward
    return 3.0 * (trainable + attn) + 2.0 * frozen
