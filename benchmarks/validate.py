"""sigprop's numbers against software and definitions nobody here wrote: one row per check, the largest difference.

    .venv/bin/python benchmarks/validate.py            # prints the markdown table of docs/validated.md

Every row is recomputed here; a peer that is not installed (neural-tangents, TransformerLens) says "not installed"
instead of a number. Rows:
- GELU's and GELU''s infinite-width kernels against nested adaptive 2-D quadrature (scipy), pre-activation std
  0.3 ... 100, with what the fixed 24-node 2-D Gauss-Hermite rule they replaced gave;
- the outlier statistics against the paper sequel's definitions (`report_outliers`) written out in NumPy;
- attention probabilities routed out of a Hugging Face Llama's SDPA against its own eager `output_attentions`;
- stream metrics of a padded BERT batch read from its `attention_mask=` against an explicit `key_mask=`;
- the theory's batch correlation at init against measurement at width 1024 (W^Q = 0, where it is exact);
- where installed: neural-tangents' NNGP kernel of a Dense -> GELU chain (weight std sqrt 2, depth 6) against
  sigprop's kernel map, and TransformerLens's `run_with_cache` residual stream against what sigprop's probe captures.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers (tiny HF models, references)

import sigprop as sp  # noqa: E402
from sigprop.probes.metrics import batch_corr_of_kernel, outlier_stats  # noqa: E402
from sigprop.probes.points import ADAPTERS  # noqa: E402
from sigprop.kernels.maps import activation_kernel  # noqa: E402
from sigprop.studies.theory import propagate_batch  # noqa: E402


def gelu_row(stds=(0.3, 1.0, 2.0, 4.0, 8.0, 32.0, 100.0), rhos=(-0.5, 0.3, 0.9, 0.999)) -> tuple[float, float]:
    """(largest relative error of sigprop's GELU and GELU' kernels, that of the old fixed 24-node 2-D rule)."""
    from sigprop.kernels.maps import derivative_kernel, quadrature_kernel
    from tests.test_theory_exact import _dgelu_s, _gelu_s, _pair, adaptive_reference, dgelu, gelu

    worst = old = 0.0
    for s in stds:
        for r in rhos:
            K = _pair(s, 0.8 * s, r)
            for ours, f, fs in ((activation_kernel(K, "gelu"), gelu, _gelu_s), (derivative_kernel(K, "gelu"), dgelu, _dgelu_s)):
                want = adaptive_reference(s, 0.8 * s, r, fs)
                worst = max(worst, abs(float(ours[0, 0, 1]) / want - 1))
                old = max(old, abs(float(quadrature_kernel(K, f, 24)[0, 0, 1]) / want - 1))
    return worst, old


def outlier_row() -> float:
    from tests.test_outliers import anchor_reference, fixed_activations

    x = fixed_activations()
    got, want = outlier_stats(x), anchor_reference(x.numpy())
    return max(abs(float(got[k]) / v - 1) for k, v in want.items())


def sdpa_row(seq: int = 12) -> float:
    from tests.hf_tiny import VOCAB
    import transformers as tf

    cfg = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
               vocab_size=VOCAB)
    torch.manual_seed(0)
    eager = tf.LlamaForCausalLM(tf.LlamaConfig(**cfg, attn_implementation="eager")).eval()
    sdpa = tf.LlamaForCausalLM(tf.LlamaConfig(**cfg, attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    idx = torch.randint(0, VOCAB, (2, seq), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = eager(idx, output_attentions=True).attentions
    adapter = ADAPTERS.pop("llama")  # as a family without an adapter row: the SDPA route, not the eager switch
    try:
        routed = sp.measure(sdpa, idx, layers="model.layers.*", attention=True).attention
    finally:
        ADAPTERS["llama"] = adapter
    return max(float((torch.as_tensor(routed[layer + 1]) - a).abs().max()) for layer, a in enumerate(own))


def padding_row() -> tuple[float, float]:
    """(largest difference between metrics read from attention_mask= and given as key_mask=, how far cos_mean moves
    when the padding counts): a half-padded sequence in a tiny HF BERT."""
    from tests.hf_tiny import VOCAB, tiny_models

    model = tiny_models()["bert"]()
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 6:] = 0
    with torch.no_grad(), sp.probe(model) as read:
        model(idx, attention_mask=mask)
    with torch.no_grad(), sp.probe(model, key_mask=mask.bool()) as given:
        model(idx, attention_mask=mask)
    with torch.no_grad(), sp.probe(model, key_mask=torch.ones(2, 12, dtype=torch.bool)) as counted:
        model(idx, attention_mask=mask)
    moved = float((counted.value("cos_mean") - given.value("cos_mean")).abs().max())
    return float((read.metrics.value - given.metrics.value).abs().max()), moved


def batch_corr_row(width: int = 1024) -> float:
    cfg = sp.ModelConfig(depth=4, width=width, heads=8, vocab_size=500, context=32)
    idx = torch.randint(0, 500, (3, 32), generator=torch.Generator().manual_seed(0))
    worst = 0.0
    for block in ("pre-ln", "op", "sas-p"):
        torch.manual_seed(0)
        m = sp.build_model(block, cfg, sets=["query_init=0"])
        measured = sp.measure(m, idx, outliers=True).value("batch_corr_mean").to_numpy()
        with torch.no_grad():
            th = propagate_batch(m.spec, cfg, m.embed(idx))
        worst = max(worst, float(np.abs(measured - [float(batch_corr_of_kernel(K)[0]) for K in th.kernels]).max()))
    return worst


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def neural_tangents_row(depth: int = 6, w_std: float = 2**0.5) -> str:
    """Relative difference of the NNGP kernel of Dense -> (GELU -> Dense) x depth, neural-tangents vs sigprop."""
    if not installed("neural_tangents"):
        return "not installed"
    import jax
    import jax.numpy as jnp
    from neural_tangents import stax

    from sigprop.kernels.maps import gelu_kernel

    jax.config.update("jax_enable_x64", True)
    x = np.random.default_rng(0).standard_normal((4, 16))
    layers = [stax.Dense(512, W_std=w_std, b_std=0.0)]
    for _ in range(depth):
        layers += [stax.Gelu(approximate=False), stax.Dense(512, W_std=w_std, b_std=0.0)]
    nt = np.asarray(stax.serial(*layers)[2](jnp.asarray(x), None, "nngp"), dtype=np.float64)
    K = w_std**2 * torch.from_numpy(x @ x.T / x.shape[1])
    for _ in range(depth):
        K = w_std**2 * gelu_kernel(K)
    return f"{float(np.abs(K.numpy() - nt).max() / np.abs(nt).max()):.1e} relative"


def transformer_lens_row(seq: int = 12) -> str:
    """Largest absolute difference between TransformerLens's cached residual stream and what sigprop's probe captures
    (layer 0 = blocks.0.hook_resid_pre, layer l + 1 = blocks.l.hook_resid_post), and between cos_mean of each."""
    if not installed("transformer_lens"):
        return "not installed"
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sigprop.probes.metrics import cos_mean, kernel

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=seq, d_head=8, n_heads=4, d_vocab=50, act_fn="gelu",
                                  normalization_type="LN", seed=0)
    model = HookedTransformer(cfg).eval()
    idx = torch.randint(0, 50, (2, seq), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, cache = model.run_with_cache(idx)
        p = sp.measure(model, idx, activations=True)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(cfg.n_layers)]
    acts = max(float((p.activations[i].double() - cache[n].double()).abs().max()) for i, n in enumerate(names))
    cos = max(abs(p.value("cos_mean", i) - float(cos_mean(kernel(cache[n])).mean())) for i, n in enumerate(names))
    return f"{acts:.1e} (stream) / {cos:.1e} (cos_mean) absolute"


def table(width: int = 1024, quick: bool = False) -> str:
    gelu, gelu_before = gelu_row(stds=(0.3, 8.0, 100.0), rhos=(0.9,)) if quick else gelu_row()
    rows = [
        ("nested adaptive 2-D quadrature (scipy `quad`)", "GELU and GELU' kernels E[phi(u) phi(v)], std 0.3-100, rho -0.5-0.999",
         f"{gelu:.1e} relative (the 24-node 2-D rule before: {gelu_before:.1e})"),
        ("the sequel's `report_outliers` in NumPy", "x_rms, kurtosis, feat/batch correlations, max/median, massive",
         f"{outlier_row():.1e} relative"),
        ("HF Llama `output_attentions` (eager)", "attention probabilities routed out of SDPA (GQA)", f"{sdpa_row():.1e} absolute"),
        ("`key_mask=` on HF BERT", "stream metrics read from the call's `attention_mask=`",
         "{:.1e} absolute (padding counted moves cos_mean by {:.1e})".format(*padding_row())),
        (f"measurement at width {width}", "theory's batch_corr_mean at init, W^Q = 0 (Pre-LN, OP, SAS-P)",
         f"{batch_corr_row(width):.3f} absolute"),
        ("neural-tangents NNGP kernels", "Dense -> GELU chain, weight std sqrt 2, depth 6", neural_tangents_row()),
        ("TransformerLens `run_with_cache`", "residual stream and cos_mean of a HookedTransformer", transformer_lens_row()),
    ]
    lines = ["| peer | quantity | largest difference |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=1024, help="width of the theory-vs-measurement row")
    ap.add_argument("--quick", action="store_true", help="3 GELU scales at one correlation instead of 7 x 4 (for tests)")
    args = ap.parse_args(argv)
    out = table(args.width, args.quick)
    print(out)
    return out


if __name__ == "__main__":
    main()
