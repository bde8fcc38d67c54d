"""Triton kernels for shaped attention's mix, forward and backward (triton itself is imported by `kernels`).

    out[b, t, c] = a_c v[b, t, c] + b_c s[b, t, c] - g_c (C v)[b, t, c],   a_c = scale alpha_h(c), likewise b_c, g_c

with h(c) = c // head_dim, `scale` an optional scalar folded in (the block's beta_sa when nothing follows attention),
C the causal running mean (decoder) or the (masked) mean over all tokens (encoder). One program owns one sequence b
and BLOCK_C channels and walks the sequence in BLOCK_T-row tiles, carrying the running sum between tiles, so any T
works and nothing of size T x T exists. Everything is computed in fp32 registers; inputs and outputs keep their dtypes.

Backward, with G = dL/d out and C^T G the transposed mean (causal: sum_{u >= t} G[u] / (u + 1), a reverse cumsum):
    dv = a G - g C^T G,  ds = b G,
    per channel: A_c = sum G v, B_c = sum G s, Gm_c = sum G (C v) = sum v (C^T G)   (the last needs no forward cumsum),
written per sequence as (B, D) fp32 partial sums that `sigprop.blocks.fused` reduces to the gains' gradients.
"""

from __future__ import annotations  # the kernels' `tl.constexpr` annotations stay strings until triton reads them

from sigprop.errors import SigpropError

#: triton and triton.language, imported by `kernels` at first use: triton is an optional extra, and on a CPU it must
#: be imported after TRITON_INTERPRET=1 is set (`sigprop.blocks.fused.mix_fused` sets it). The kernels read `tl` from
#: this module's globals when triton compiles or interprets them.
triton = tl = None


def _mix_fwd(V, S, O, A, Bt, G, SC, M, T, D, DH, svb, svt, ssb, sst, sob, sot, a_st, b_st, g_st,
             CAUSAL: tl.constexpr, HAS_G: tl.constexpr, HAS_SC: tl.constexpr, HAS_M: tl.constexpr,
             BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cols < D
    head = cols // DH
    sc = tl.load(SC).to(tl.float32) if HAS_SC else 1.0
    a = tl.load(A + head * a_st, mask=cm, other=0.0).to(tl.float32) * sc
    bb = tl.load(Bt + head * b_st, mask=cm, other=0.0).to(tl.float32) * sc
    g = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    if HAS_G:
        g = tl.load(G + head * g_st, mask=cm, other=0.0).to(tl.float32) * sc
        if not CAUSAL:  # first sweep: the (masked) mean over the sequence
            cnt = tl.zeros([BLOCK_T], tl.float32)
            for t0 in range(0, T, BLOCK_T):
                rows = t0 + tl.arange(0, BLOCK_T)
                rm = rows < T
                v = tl.load(V + b * svb + rows[:, None] * svt + cols[None, :], mask=rm[:, None] & cm[None, :], other=0.0)
                v = v.to(tl.float32)
                if HAS_M:
                    w = tl.load(M + b * T + rows, mask=rm, other=0.0).to(tl.float32)
                    v = v * w[:, None]
                    cnt += w
                else:
                    cnt += rm.to(tl.float32)
                mean += tl.sum(v, 0)
            mean = mean / tl.sum(cnt, 0)
    carry = tl.zeros([BLOCK_C], tl.float32)
    for t0 in range(0, T, BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        msk = (rows < T)[:, None] & cm[None, :]
        v = tl.load(V + b * svb + rows[:, None] * svt + cols[None, :], mask=msk, other=0.0).to(tl.float32)
        s = tl.load(S + b * ssb + rows[:, None] * sst + cols[None, :], mask=msk, other=0.0).to(tl.float32)
        out = a[None, :] * v + bb[None, :] * s
        if HAS_G:
            if CAUSAL:
                run = tl.cumsum(v, 0) + carry[None, :]
                carry += tl.sum(v, 0)
                out -= g[None, :] * (run / (rows + 1).to(tl.float32)[:, None])
            else:
                out -= (g * mean)[None, :]
        tl.store(O + b * sob + rows[:, None] * sot + cols[None, :], out.to(O.dtype.element_ty), mask=msk)


def _mix_bwd(GO, V, S, DV, DS, PA, PB, PG, A, Bt, G, SC, M, T, D, DH, sgb, sgt, svb, svt, ssb, sst, a_st, b_st, g_st,
             CAUSAL: tl.constexpr, HAS_G: tl.constexpr, HAS_SC: tl.constexpr, HAS_M: tl.constexpr,
             NEED_V: tl.constexpr, NEED_S: tl.constexpr, WANT_DV: tl.constexpr, WANT_DS: tl.constexpr,
             BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cols < D
    head = cols // DH
    sc = tl.load(SC).to(tl.float32) if HAS_SC else 1.0
    a = tl.load(A + head * a_st, mask=cm, other=0.0).to(tl.float32) * sc
    bb = tl.load(Bt + head * b_st, mask=cm, other=0.0).to(tl.float32) * sc
    g = tl.zeros([BLOCK_C], tl.float32)
    colsum = tl.zeros([BLOCK_C], tl.float32)  # non-causal: sum_t G[t] / n, the same C^T G for every real key
    if HAS_G:
        g = tl.load(G + head * g_st, mask=cm, other=0.0).to(tl.float32) * sc
        if not CAUSAL:
            cnt = tl.zeros([BLOCK_T], tl.float32)
            for t0 in range(0, T, BLOCK_T):
                rows = t0 + tl.arange(0, BLOCK_T)
                rm = rows < T
                go = tl.load(GO + b * sgb + rows[:, None] * sgt + cols[None, :], mask=rm[:, None] & cm[None, :], other=0.0)
                colsum += tl.sum(go.to(tl.float32), 0)
                if HAS_M:
                    cnt += tl.load(M + b * T + rows, mask=rm, other=0.0).to(tl.float32)
                else:
                    cnt += rm.to(tl.float32)
            colsum = colsum / tl.sum(cnt, 0)
    acc_a = tl.zeros([BLOCK_C], tl.float32)
    acc_b = tl.zeros([BLOCK_C], tl.float32)
    acc_g = tl.zeros([BLOCK_C], tl.float32)
    carry = tl.zeros([BLOCK_C], tl.float32)
    n_tiles = tl.cdiv(T, BLOCK_T)
    for i in range(0, n_tiles):
        t0 = (n_tiles - 1 - i) * BLOCK_T  # last tile first: the causal C^T G is a reverse cumsum
        rows = t0 + tl.arange(0, BLOCK_T)
        rm = rows < T
        msk = rm[:, None] & cm[None, :]
        go = tl.load(GO + b * sgb + rows[:, None] * sgt + cols[None, :], mask=msk, other=0.0).to(tl.float32)
        ctg = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
        if HAS_G:
            if CAUSAL:
                w = go / (rows + 1).to(tl.float32)[:, None]
                ctg = tl.cumsum(w, 0, reverse=True) + carry[None, :]
                carry += tl.sum(w, 0)
            elif HAS_M:
                ctg = tl.load(M + b * T + rows, mask=rm, other=0.0).to(tl.float32)[:, None] * colsum[None, :]
            else:
                ctg = tl.where(rm[:, None], 1.0, 0.0) * colsum[None, :]
        if WANT_DV:
            dv = a[None, :] * go - g[None, :] * ctg
            tl.store(DV + b * svb + rows[:, None] * svt + cols[None, :], dv.to(DV.dtype.element_ty), mask=msk)
        if WANT_DS:
            tl.store(DS + b * ssb + rows[:, None] * sst + cols[None, :], (bb[None, :] * go).to(DS.dtype.element_ty), mask=msk)
        if NEED_V:
            v = tl.load(V + b * svb + rows[:, None] * svt + cols[None, :], mask=msk, other=0.0).to(tl.float32)
            acc_a += tl.sum(go * v, 0)
            acc_g += tl.sum(ctg * v, 0)
        if NEED_S:
            s = tl.load(S + b * ssb + rows[:, None] * sst + cols[None, :], mask=msk, other=0.0).to(tl.float32)
            acc_b += tl.sum(go * s, 0)
    if NEED_V:
        tl.store(PA + b * D + cols, acc_a, mask=cm)
        tl.store(PG + b * D + cols, acc_g, mask=cm)
    if NEED_S:
        tl.store(PB + b * D + cols, acc_b, mask=cm)


_JIT: dict[str, tuple] = {}


def interpreting() -> bool:
    """Whether triton was imported under TRITON_INTERPRET=1: only then do its library functions (tl.cumsum, tl.zeros,
    ...) run on the CPU, since triton wraps them when it is imported."""
    return type(tl.cumsum).__name__ == "InterpretedFunction"


def kernels(device_type: str) -> tuple:
    """(forward, backward): compiled for CUDA; for CPU tensors run by Triton's interpreter (the same kernel source
    executed with numpy, for tests on machines without a GPU), which must have been on when triton was imported."""
    global triton, tl
    if tl is None:
        import triton as triton_
        import triton.language as tl_

        triton, tl = triton_, tl_
    if device_type != "cuda" and not interpreting():
        raise SigpropError(f"attn_impl='fused' on {device_type} tensors runs Triton's interpreter, which was off when "
                           "triton was imported; accepted: set TRITON_INTERPRET=1 before Python starts, or a CUDA device")
    if device_type not in _JIT:
        _JIT[device_type] = (triton.jit(_mix_fwd), triton.jit(_mix_bwd))
    return _JIT[device_type]
