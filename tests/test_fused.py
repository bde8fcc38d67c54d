"""Issue 30: shaped attention's mix alpha V + beta SDPA - gamma C V as one Triton kernel forward and backward.

Value and gradient against the explicit T x T arithmetic in float64. On a machine without a GPU the kernels run in
Triton's interpreter (conftest sets TRITON_INTERPRET=1), the same kernel source; with one (benchmarks/gpu_speed.sh's
first stage) every test runs on CUDA, compiled. Skipped only where triton is not installed (`pip install 'sigprop[gpu]'`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sigprop import SigpropError
from sigprop.blocks.attention import Attention
from sigprop.blocks.fused import ENV, mix_compiled, mix_fused, mix_torch, resolve_impl, set_attn_impl, triton_available
from sigprop.blocks.model import build_model
from sigprop.kernels.softmax import centring_matrix

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed (pip install 'sigprop[gpu]')")

#: (causal, padded keys, heads, head_dim, T, gains per head, gamma, scale): T = 37 spans two 32-token tiles (the running
#: sum carried between them), T = 5 less than one; d = 60 and 80 leave channel tiles of 64 part-empty
CASES = {
    "causal, 3 heads, T 37": (True, False, 3, 20, 37, True, True, True),
    "causal, 4 heads, d 80, no scale": (True, False, 4, 20, 37, True, True, False),
    "causal, 1 head, T 5, scalar gains": (True, False, 1, 16, 5, False, True, True),
    "encoder, 2 heads, T 19": (False, False, 2, 20, 19, True, True, True),
    "encoder, padded keys, T 41": (False, True, 3, 20, 41, True, True, True),
    "value-skipinit (no gamma)": (True, False, 3, 20, 37, True, False, True),
}


def explicit_mix(v, s, alpha, beta, gamma, scale, causal, key_mask, heads):
    """scale (alpha I + beta S - gamma C) per head with the T x T matrix C built explicitly, in float64."""
    B, T, D = v.shape
    vh = v.double().view(B, T, heads, D // heads).transpose(1, 2)
    sh = s.double().view(B, T, heads, D // heads).transpose(1, 2)
    per_head = lambda g: g.double().expand(heads).view(1, heads, 1, 1)  # noqa: E731
    y = per_head(alpha) * vh + per_head(beta) * sh
    if gamma is not None:
        C = centring_matrix(T, causal, None if causal else key_mask, dtype=torch.float64, device=v.device)
        y = y - per_head(gamma) * (C @ vh)
    y = y.transpose(1, 2).reshape(B, T, D)
    return y * scale.double() if scale is not None else y


def inputs(case: str, dtype=torch.float32, seed: int = 0):
    causal, padded, H, dh, T, per_head, has_gamma, has_scale = CASES[case]
    g = torch.Generator().manual_seed(seed)
    B, shape = 2, (H,) if per_head else ()
    v = torch.randn(B, T, H * dh, generator=g).to(DEV, dtype).requires_grad_()
    s = torch.randn(B, T, H * dh, generator=g).to(DEV, dtype).requires_grad_()
    gain = lambda: (0.5 + torch.rand(shape, generator=g)).to(DEV).requires_grad_()  # noqa: E731
    alpha, beta, gamma = gain(), gain(), gain() if has_gamma else None
    scale = torch.tensor(0.7, device=DEV, requires_grad=True) if has_scale else None
    mask = None
    if padded:
        mask = torch.ones(B, T, dtype=torch.bool, device=DEV)
        mask[1, -9:] = False
    return (v, s, alpha, beta, gamma, scale, causal, mask, H)


def value_and_grads(fn, args):
    y = fn(*args)
    leaves = [a for a in args[:6] if isinstance(a, torch.Tensor)]
    go = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(DEV, args[0].dtype).to(y.dtype)  # same for all
    return y, [g.double() for g in torch.autograd.grad(y, leaves, go)]


@needs_triton
@pytest.mark.parametrize("case", CASES)
def test_fused_mix_equals_the_explicit_matrix_value_and_gradient(case: str) -> None:
    args = inputs(case)
    y, grads = value_and_grads(mix_fused, args)
    ref, ref_grads = value_and_grads(explicit_mix, args)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=2e-6)
    for g, r in zip(grads, ref_grads):  # dV, dS, then the gains (sums over B T d / H terms)
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-5, atol=5e-5)


@needs_triton
@pytest.mark.parametrize("case", ["causal, 3 heads, T 37", "encoder, padded keys, T 41"])
def test_fused_mix_in_bf16_keeps_bf16_and_rounds_once(case: str) -> None:
    """bf16 in, fp32 inside, bf16 out: within one bf16 unit in the last place (2^-7 relative) of the exact result of the
    same bf16 inputs. (Compiled Triton rounds to nearest, half an ulp; the interpreter truncates, up to one.)"""
    args = inputs(case, torch.bfloat16)
    y = mix_fused(*args)
    dv, ds = torch.autograd.grad(y, args[:2], torch.ones_like(y), retain_graph=True)
    assert y.dtype == dv.dtype == ds.dtype == torch.bfloat16
    y, grads = value_and_grads(mix_fused, args)
    ref, ref_grads = value_and_grads(explicit_mix, args)
    assert ((y.double() - ref).abs() <= 2**-7 * ref.abs() + 1e-6).all()
    for g, r in zip(grads[:2], ref_grads[:2]):
        assert ((g - r).abs() <= 2**-7 * r.abs() + 1e-6).all()
    for g, r in zip(grads[2:], ref_grads[2:]):  # the gains: fp32 sums of bf16 products
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-3)


@needs_triton
def test_fused_mix_skips_what_no_gradient_needs() -> None:
    """Fixed gains (buffers): nothing of v or s is saved, and the input gradients are still exact."""
    v, s, alpha, beta, gamma, scale, causal, mask, H = inputs("causal, 3 heads, T 37")
    fixed = [x.detach() for x in (alpha, beta, gamma)]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = mix_fused(v, s, *fixed, None, causal, mask, H)
    assert not any(t.shape == v.shape for t in saved)
    dv, ds = torch.autograd.grad(y, (v, s), torch.ones_like(y))
    rv, rs = torch.autograd.grad(explicit_mix(v, s, *fixed, None, causal, mask, H), (v, s), torch.ones_like(y, dtype=torch.float64))
    torch.testing.assert_close(dv.double(), rv.double(), rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(ds.double(), rs.double(), rtol=1e-5, atol=2e-6)


#: compiles both kernels for a GPU in a process of its own (under TRITON_INTERPRET=1, triton's own library functions are
#: the interpreter's, which the compiler cannot call); prints one line per variant
AOT = """
import sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sigprop.blocks import triton_mix as tm
arch = int(sys.argv[1])
scalars = ("T", "D", "DH", "svb", "svt", "ssb", "sst", "sob", "sot", "sgb", "sgt", "a_st", "b_st", "g_st")
variants = [(tm._mix_fwd, dict(CAUSAL=True, HAS_G=True, HAS_SC=True, HAS_M=False)),
            (tm._mix_fwd, dict(CAUSAL=False, HAS_G=True, HAS_SC=False, HAS_M=True)),
            (tm._mix_bwd, dict(CAUSAL=True, HAS_G=True, HAS_SC=True, HAS_M=False, NEED_V=True, NEED_S=True,
                               WANT_DV=True, WANT_DS=True)),
            (tm._mix_bwd, dict(CAUSAL=False, HAS_G=True, HAS_SC=False, HAS_M=True, NEED_V=False, NEED_S=True,
                               WANT_DV=True, WANT_DS=False))]
fwd, bwd = tm.kernels("cuda")  # imports triton (no interpreter in this process) and jit-wraps both kernels
for fn, flags in variants:
    kernel = fwd if fn is tm._mix_fwd else bwd
    consts = {**flags, "BLOCK_T": 32, "BLOCK_C": 64}
    sig = {n: "i32" if n in scalars else "constexpr" if n in consts else "*fp32" if n in ("PA", "PB", "PG", "A", "Bt",
           "G", "SC", "M") else "*bf16" for n in kernel.arg_names}
    try:
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts)
    except TypeError:
        print("ASTSource API differs"); sys.exit(0)
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32))
    print(fn.__name__, "cubin", len(k.asm["cubin"]), f".target sm_{arch}" in k.asm["ptx"])
"""


@needs_triton
@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_the_gpu_without_one(arch: int) -> None:
    """The interpreter runs the kernels as Python, so it misses what only the compiler rejects (loop-carried types,
    constexpr branches): compile both kernels ahead of time to sm_80 / sm_90 machine code, which needs no GPU."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", AOT, str(arch)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    if "API differs" in res.stdout:
        pytest.skip("this triton's ASTSource takes other arguments")
    lines = res.stdout.split("\n")
    assert sum(line.endswith(" True") and " cubin " in line for line in lines) == 4, res.stdout


def test_torch_ops_form_equals_the_explicit_matrix() -> None:
    """mix_torch, what "compile" hands to Inductor, is the same arithmetic (no triton needed)."""
    for case in CASES:
        args = inputs(case)
        y, grads = value_and_grads(mix_torch, args)
        ref, ref_grads = value_and_grads(explicit_mix, args)
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=2e-6)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=5e-5)


# ------------------------------------------------------------------------------------------------
# In the model: every implementation trains the same model
# ------------------------------------------------------------------------------------------------

MODELS = {
    "sas-p": ("sas-p", "decoder", ()),
    "sas": ("sas", "decoder", ()),
    "sas-p encoder, padding": ("sas-p", "encoder", ()),
    "value-skipinit, one gain for all heads": ("v-skipinit", "decoder", ("attention=value_skipinit", "per_head_gains=false")),
    "sas-p, value residual": ("sas-p", "decoder", ("value_residual=0.5",)),
}


def perturbed_model(block: str, kind: str = "decoder", sets=()):
    """A small model away from init: trained-looking gains, a nonzero W^Q (the same draw every call)."""
    model = build_model(block, sets=sets, depth=2, width=48, heads=3, vocab_size=64, context=33, kind=kind, seed=0).to(DEV)
    with torch.no_grad():  # away from init: trained-looking gains, a nonzero W^Q
        gen = torch.Generator().manual_seed(3)
        for name, p in model.named_parameters():
            if p.ndim < 2:
                p.add_(0.2 * torch.randn(p.shape, generator=gen).to(DEV))
            elif name.endswith("w_q.weight"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen).to(DEV))
    return model


def loss_and_grads(block: str, kind: str, sets, impl: str, autocast: bool = False):
    model = perturbed_model(block, kind, sets)
    if impl == "explicit":
        for m in model.modules():
            if isinstance(m, Attention):
                m.explicit = True
    else:
        set_attn_impl(model, impl)
    gen = torch.Generator().manual_seed(1)
    idx, tgt = (torch.randint(0, 64, (2, 33), generator=gen).to(DEV) for _ in range(2))
    mask = None
    if kind == "encoder":
        mask = torch.ones(2, 33, dtype=torch.bool, device=DEV)
        mask[1, -7:] = False
    with torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=autocast):
        _, loss = model(idx, tgt, key_mask=mask)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@needs_triton
@pytest.mark.parametrize("name", MODELS)
def test_fused_model_equals_sdpa_and_explicit_paths(name: str) -> None:
    block, kind, sets = MODELS[name]
    loss, grads = loss_and_grads(block, kind, sets, "sdpa")
    for impl in ("fused", "explicit"):
        other, other_grads = loss_and_grads(block, kind, sets, impl)
        torch.testing.assert_close(other, loss, rtol=1e-6, atol=1e-6)
        assert other_grads.keys() == grads.keys()
        for n, g in grads.items():
            torch.testing.assert_close(other_grads[n], g, rtol=1e-4, atol=1e-6, msg=f"{impl}: {n}")


@needs_triton
def test_fused_model_under_bf16_autocast() -> None:
    """bf16 end to end: measured against fp32, the fused path's loss and gradients are about as close as today's path
    under the same autocast. (Absolute slack 1e-4, 1% of a gain's gradient here: a gain whose exact gradient is ~0 by
    the next norm's scale invariance, such as block 1's beta_sa in SAS-P, keeps only rounding noise in either path.)"""
    exact, exact_grads = loss_and_grads("sas-p", "decoder", (), "sdpa")
    loss, grads = loss_and_grads("sas-p", "decoder", (), "sdpa", autocast=True)
    fused, fused_grads = loss_and_grads("sas-p", "decoder", (), "fused", autocast=True)
    assert abs(float(fused - exact)) <= 3 * abs(float(loss - exact)) + 1e-4
    err = lambda g, n: float(torch.linalg.vector_norm(g[n] - exact_grads[n]))  # noqa: E731
    for n in exact_grads:
        assert err(fused_grads, n) <= 3 * err(grads, n) + 1e-4, n


@needs_triton
def test_fused_path_saves_less_than_the_torch_ops() -> None:
    """One SAS-P block under bf16 autocast: the fused mix saves only tensors SDPA keeps anyway and the block shares one
    bf16 copy of its normed input, and the branch gains are folded, so it saves ~45% less than the torch ops (fp32 V for
    alpha's gradient, C V for gamma's, each branch's output for its gain's, a bf16 copy of the input per matmul)."""
    def saved_bytes(impl: str) -> int:
        model = set_attn_impl(build_model("sas-p", depth=2, width=64, heads=2, vocab_size=64, context=160, seed=0), impl)
        model.to(DEV)
        x = torch.randn(4, 160, 64, device=DEV)  # T > 128: the CPU SDPA kernel runs in bf16 (attention.sdpa), as on a GPU
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autocast(DEV.type, dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.blocks[1](x)
        return sum(seen.values())

    assert saved_bytes("fused") < 0.6 * saved_bytes("sdpa")


@needs_triton
def test_branch_gains_are_folded_only_where_nothing_reads_the_module_outputs() -> None:
    """The fused path folds SAS-P's beta_sa into the mix and beta_ff into W_out, both trained; with forward hooks on the
    attention and MLP modules it does not, so the hooks see MHA(h) and MLP(h) themselves, as on the torch-ops path."""
    seen, loss = {}, {}
    for impl in ("sdpa", "fused"):
        for hooked in (False, True):
            model = set_attn_impl(build_model("sas-p", depth=1, width=32, heads=2, vocab_size=64, context=16, seed=0), impl)
            model.to(DEV)
            block = model.blocks[0]
            assert block.beta_sa.requires_grad and block.beta_ff.requires_grad
            with torch.no_grad():
                block.beta_sa.fill_(0.5)
                block.beta_ff.fill_(2.0)
            if hooked:
                for name in ("attn", "mlp"):
                    getattr(block, name).register_forward_hook(
                        lambda m, i, o, key=(impl, name): seen.__setitem__(key, o.detach()))
            loss[impl, hooked] = model(torch.arange(16, device=DEV)[None], torch.arange(1, 17, device=DEV)[None])[1]
            loss[impl, hooked].backward()
            assert block.beta_sa.grad is not None and block.beta_ff.grad is not None
    for name in ("attn", "mlp"):
        torch.testing.assert_close(seen["fused", name], seen["sdpa", name])
    for key in loss:
        torch.testing.assert_close(loss[key], loss["sdpa", False])


def test_compile_impl_equals_the_explicit_matrix() -> None:
    """attn_impl='compile': mix_torch through torch.compile (Inductor: C++ on a CPU, Triton on a GPU)."""
    args = inputs("causal, 3 heads, T 37")
    y, grads = value_and_grads(mix_compiled, args)
    ref, ref_grads = value_and_grads(explicit_mix, args)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=2e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=5e-5)


def test_a_compiled_model_traces_the_cumsum_form() -> None:
    """Inside torch.compile, auto means the torch ops in cumsum form with the gains folded (dynamo traces them; the
    eager backend needs no C compiler): the same loss and gradients as the eager model."""
    import torch._dynamo

    torch._dynamo.reset()
    ref = loss_and_grads("sas-p", "decoder", (), "sdpa")
    model = perturbed_model("sas-p")  # the model loss_and_grads differentiates
    seen = []
    orig = Attention.mix_impl
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Attention, "mix_impl", lambda self, device: seen.append(orig(self, device)) or seen[-1])
        gen = torch.Generator().manual_seed(1)
        idx, tgt = (torch.randint(0, 64, (2, 33), generator=gen).to(DEV) for _ in range(2))
        loss = torch.compile(model, backend="eager")(idx, tgt)[1]
    loss.backward()
    assert "compile" in seen
    torch.testing.assert_close(loss.detach(), ref[0], rtol=1e-6, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[1][n], rtol=1e-4, atol=1e-6, msg=n)


# ------------------------------------------------------------------------------------------------
# The automatic choice
# ------------------------------------------------------------------------------------------------


def test_auto_keeps_the_torch_ops_on_cpu_and_the_env_overrides(monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert resolve_impl("auto", torch.device("cpu")) == "sdpa"
    assert resolve_impl("fused", torch.device("cpu")) == "fused"
    assert resolve_impl("auto", torch.device("cuda")) == ("fused" if triton_available() else "sdpa")
    monkeypatch.setenv(ENV, "compile")
    assert resolve_impl("auto", torch.device("cpu")) == "compile"
    assert resolve_impl("sdpa", torch.device("cpu")) == "sdpa"  # an explicit choice wins over the environment
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(SigpropError, match="SIGPROP_ATTN_IMPL.*accepted"):
        resolve_impl("auto", torch.device("cpu"))
    with pytest.raises(SigpropError, match="attn_impl.*accepted"):
        set_attn_impl(build_model("sas-p", depth=1, width=32, heads=2, vocab_size=64), "triton")
