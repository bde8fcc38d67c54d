"""What one block's training step asks of GPU memory, counted on a CPU: saved activations and bytes moved (issue 30).

    .venv/bin/python benchmarks/mix_traffic.py [--batch 4 --scale-to 128] [--width 768 --heads 12 --seq 128]

A GPU step of shaped attention is bound by memory traffic outside the matmuls, which a CPU cannot time but can count.
For one block (block 2 of a 2-block model, bf16 autocast, forward + backward) of Pre-LN and of SAS-P and SAS per
attn_impl, a TorchDispatchMode sees every aten op: the ops that launch work, and the bytes that the non-matmul ones
read and write over activation-sized tensors (weights and gains apart); saved_tensors_hooks sees what is kept for
backward. Counts at --batch scale linearly to --scale-to. The CPU SDPA kernel is kept in bf16, as on CUDA (where it
saves the same q, k, v, out, logsumexp). The fused mix's two Triton kernels are counted by hand (forward: read V, S,
write out; backward: read dOut, V, S, write dV, dS; all bf16), since on a CPU they run in Triton's interpreter, not
as aten ops; here they are not run at all, only their autograd wiring. Caveats: op decompositions differ between CPU
and CUDA (RMSNorm, for one, may be one CUDA kernel), and a GPU may run small ops well below its bandwidth.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import sigprop.blocks.attention as attention
import sigprop.blocks.triton_mix as triton_mix
from sigprop.blocks.fused import set_attn_impl
from sigprop.blocks.model import build_model

#: ops that move no data (views, allocation)
FREE = {"view", "_unsafe_view", "t", "transpose", "expand", "as_strided", "detach", "alias", "slice", "select", "split",
        "unsqueeze", "squeeze", "permute", "reshape", "empty", "empty_like", "empty_strided", "lift_fresh",
        "split_with_sizes", "unbind", "new_empty", "new_empty_strided"}
MATMUL = ("mm", "addmm", "bmm", "baddbmm", "matmul", "_scaled_dot_product")
CASES = (("pre-ln", "sdpa"), ("sas-p", "sdpa"), ("sas-p", "fused"), ("sas", "sdpa"), ("sas", "fused"))


class Count(TorchDispatchMode):
    """Ops that launch work; ops and bytes of the non-matmul ones over tensors whose first dim is a batch dim."""

    def __init__(self, batch_dims: tuple[int, ...]):
        super().__init__()
        self.batch_dims, self.ops, self.elementwise, self.bytes = batch_dims, 0, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in FREE:
            return out
        self.ops += 1
        big = [t for t in tree_flatten((args, kwargs, out))[0]
               if isinstance(t, torch.Tensor) and t.ndim >= 2 and t.shape[0] in self.batch_dims]
        if big and not name.startswith(MATMUL):
            self.elementwise += 1
            self.bytes += sum(t.numel() * t.element_size() for t in big)
        return out


class _NoLaunch:
    """Stands in for a Triton launch: on a GPU it issues no aten op (the interpreter here would)."""

    def __getitem__(self, grid):
        return lambda *args, **kw: None


@contextmanager
def gpu_like() -> Iterator[None]:
    """The CPU SDPA kernel kept in bf16 (as CUDA's) and the Triton launches stubbed, both restored afterwards."""
    old = attention.CPU_FP32_SDPA_MAX_T, triton_mix.kernels
    attention.CPU_FP32_SDPA_MAX_T = 0
    triton_mix.kernels = lambda device_type: (_NoLaunch(), _NoLaunch())
    try:
        yield
    finally:
        attention.CPU_FP32_SDPA_MAX_T, triton_mix.kernels = old


def count(block: str, impl: str, a: argparse.Namespace) -> dict[str, float]:
    """One block's forward + backward under bf16 autocast: ops, non-matmul ops and GB moved, MB saved (scaled)."""
    model = set_attn_impl(build_model(block, depth=2, width=a.width, heads=a.heads, vocab_size=64, context=a.seq,
                                      seed=0), impl)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params and t.ndim >= 2 and t.shape[0] in (a.batch, a.batch * a.seq):
            saved[st.data_ptr()] = st.nbytes()
        return t

    x = torch.randn(a.batch, a.seq, a.width, requires_grad=True)
    mode = Count((a.batch, a.batch * a.seq))
    with mode:
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = model.blocks[1](x)
        y.float().sum().backward()
    k = a.scale_to / a.batch
    moved = mode.bytes * k
    if impl == "fused":  # the two kernels: forward 3, backward 5 bf16 passes over (B, T, d)
        moved += 8 * 2 * a.scale_to * a.seq * a.width
    return {"ops": mode.ops + 2 * (impl == "fused"), "elementwise": mode.elementwise + 2 * (impl == "fused"),
            "gb": moved / 1e9, "saved_mb": sum(saved.values()) * k / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batch", type=int, default=4, help="sequences counted (the counts scale linearly)")
    ap.add_argument("--scale-to", type=int, default=128, help="batch the counts are scaled to")
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--bandwidth", type=float, default=3.5, help="TB/s for the time column (H200: ~4 read + write)")
    a = ap.parse_args(argv)
    print(f"one block, d={a.width}, {a.heads} heads, batch {a.scale_to} x T={a.seq}, bf16 autocast, forward + backward\n")
    print("| block | attn_impl | ops launched | non-matmul ops over activations | GB they move | ms at "
          f"{a.bandwidth:g} TB/s | MB saved for backward |\n|---|---|---|---|---|---|---|")
    for block, impl in CASES:
        with gpu_like():
            c = count(block, impl, a)
        print(f"| {block} | {impl if block != 'pre-ln' else '-'} | {c['ops']} | {c['elementwise']} | {c['gb']:.2f} | "
              f"{c['gb'] / a.bandwidth:.2f} | {c['saved_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
