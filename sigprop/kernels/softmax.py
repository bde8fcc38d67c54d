"""How attention enters the kernel maps at init: the centring matrix C, Gaussian logits and their softmax, and the
`KernelContext` that the modules' maps share while theory runs them (softmax treatment, batch layout, masks, notes).

With W^Q = 0 the softmax is exactly C (the attention matrix at zero logits). With a random W^Q the logits are Gaussian
in the wide limit, with covariance s^2 N_ii' N_jj' (N the normalised input kernel, s = std(W^Q) std(W^K) d): E[A N A^T]
is then a Monte-Carlo average over sampled logits (`softmax="sampled"`), or A is replaced by C (`"uniform"`, the
small-logit limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sigprop.errors import SigpropError
from sigprop.kernels.maps import Kernel, normalise
from sigprop.probes.metrics import entropy_ratio, single_thread

#: how a softmax with random W^Q enters: averaged over sampled Gaussian logits, or its small-logit limit C
SOFTMAX = ("sampled", "uniform")


def centring_matrix(T: int, causal: bool, key_mask: torch.Tensor | None = None, dtype=torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """C: the attention matrix at zero logits.

    causal: lower-triangular with rows 1/i (1-indexed). Non-causal: 1/T_valid on valid keys.
    Returns (T, T), or (B, 1, T, T) when a (B, T) key mask (True = real token) is given. Built on `device` (not
    copied there: a host-to-GPU copy of pageable memory in every layer's forward would synchronise the GPU).
    """
    if causal:
        C = torch.ones(T, T, dtype=dtype, device=device).tril() / torch.arange(1, T + 1, dtype=dtype, device=device)[:, None]
        return C
    if key_mask is None:
        return torch.full((T, T), 1.0 / T, dtype=dtype, device=device)
    m = key_mask.to(dtype)
    return (m / m.sum(-1, keepdim=True))[:, None, None, :].expand(-1, 1, T, -1)


def centring(T: int, causal: bool, key_mask: torch.Tensor | None) -> torch.Tensor:
    """C in float64 as (B|1, T, T)."""
    C = centring_matrix(T, causal, None if causal else key_mask, dtype=torch.float64)
    return C[:, 0] if C.ndim == 4 else C[None]


def check_softmax(softmax: str) -> None:
    if softmax not in SOFTMAX:
        raise SigpropError(f"unknown softmax treatment {softmax!r}; accepted: {', '.join(SOFTMAX)}")


def sampled_logits(N: Kernel, spec: BlockSpec, logit_std: float, samples: int, seed: int) -> Kernel:
    """(samples, B, T, T) logits L = s P G P^T (P P^T = N, G i.i.d. normal): the wide-head limit of QK^T / sqrt(d_k).

    With QK-norm (the OP block) each head's queries and keys have unit RMS, so the logits see the normalised kernel
    and s = 1 (`Attention.logit_std`); a soft-cap c applies c tanh(L / c) to the drawn logits."""
    B, T, _ = N.shape
    if spec.qk_norm != "none":
        N = normalise(N)[0]
    with single_thread():
        lam, V = torch.linalg.eigh(N)
    P = V * lam.clamp_min(0).sqrt()[..., None, :]  # (B, T, T)
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(samples, B, T, T, generator=g, dtype=torch.float32)
    P32 = P.to(torch.float32)  # float32 is plenty for Monte-Carlo logits, and 2x cheaper
    L = (logit_std * (P32 @ G @ P32.transpose(-1, -2))).to(torch.float64)
    if spec.logit_softcap is not None:
        L = spec.logit_softcap * torch.tanh(L / spec.logit_softcap)
    return L


def sampled_softmax(N: Kernel, spec: BlockSpec, logit_std: float, causal: bool, key_mask: torch.Tensor | None, samples: int,
                    seed: int) -> torch.Tensor:
    """(samples, B, T, T) softmax probabilities over sampled logits (`sampled_logits`), masked as the model masks."""
    T = N.shape[-1]
    L = sampled_logits(N, spec, logit_std, samples, seed)
    allowed = torch.ones(T, T, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :]
    return torch.softmax(L.masked_fill(~allowed, float("-inf")), dim=-1)


def mean_entropy_ratio(S: torch.Tensor, key_mask: torch.Tensor | None = None) -> float:
    """The mean attention-entropy ratio (`probes.metrics.entropy_ratio`) of softmax matrices (..., B, T, T)."""
    S = S.reshape(-1, *S.shape[-3:]).transpose(0, 1)  # (B, draws, T, T): the draws in place of heads
    return float(entropy_ratio(S / S.sum(-1, keepdim=True), key_mask).mean())


@dataclass
class KernelContext:
    """What the modules' kernel maps need besides their input kernel, and what the prediction records.

    `joint` = B: kernels are joint over all B T tokens of a batch (pairs across sequences too); attention then mixes
    tokens within each sequence only (a block-diagonal matrix), each sequence's softmax drawn from its diagonal block.
    """

    T: int
    causal: bool
    width: int
    softmax: str = "sampled"
    samples: int = 8
    seed: int = 0
    key_mask: torch.Tensor | None = None
    joint: int | None = None
    notes: list[str] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)  # per softmax: mean attention-entropy ratio (0 = entropy collapse)
    state: dict = field(default_factory=dict)  # carried across blocks (value residual: block 1's values)

    def __post_init__(self) -> None:
        check_softmax(self.softmax)
        self.C = centring(self.T, self.causal, None if self.joint else self.key_mask)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def fixed(self, A: torch.Tensor) -> torch.Tensor:
        """One fixed (T, T) attention matrix for every sequence, as (1, 1, T, T) draws; its entropy recorded."""
        self.entropy.append(mean_entropy_ratio(A[None], None if self.joint else self.key_mask))
        return A[None, None]

    def softmax_draws(self, N: Kernel, spec, layer: int, logit_std: float) -> torch.Tensor:
        """(draws, B|1, T, T) softmax matrices at init for logits of std `logit_std` from the input kernel N: exactly C when
        logit_std = 0, else sampled Gaussian logits (seed + layer) or their small-logit limit C."""
        mask = None if self.joint else self.key_mask
        per = " per sequence" if self.joint else ""
        if logit_std == 0 or self.softmax == "uniform":
            if logit_std != 0:
                self.note(f"softmax replaced by its small-logit limit C (logit std {logit_std:.2f} at width {self.width})")
            S = self.C[None]
        else:
            if self.joint:  # each sequence's diagonal block of the joint kernel
                B, T = self.joint, self.T
                N = N[0].reshape(B, T, B, T).transpose(1, 2)[torch.arange(B), torch.arange(B)]
            S = sampled_softmax(N, spec, logit_std, self.causal, mask, self.samples, self.seed + layer)
            self.note(f"softmax averaged over {self.samples} sampled Gaussian logit draws{per} "
                      f"(logit std {logit_std:.2f} at width {self.width})")
        self.entropy.append(mean_entropy_ratio(S, mask))
        return S

    def mix(self, A: torch.Tensor, V: Kernel) -> tuple[Kernel, Kernel]:
        """(E[A V A^T], E[A]) over the draws of A (draws, B|1, T, T), per sequence or joint over the batch."""
        if self.joint is None:
            return (A @ V @ A.transpose(-1, -2)).mean(0), A.mean(0)
        B, T = self.joint, self.T
        if A.shape[0] == 1:  # one matrix per sequence: the joint matrix is block-diagonal
            Aj = torch.block_diag(*A[0].expand(B, T, T))[None]
            return Aj @ V @ Aj.transpose(-1, -2), Aj
        V4 = V[0].reshape(B, T, B, T).transpose(1, 2)  # (B, B, T, T): block (b, c); the same draw = the same weights
        ANA = torch.einsum("sbij,bcjk,sclk->bcil", A, V4, A) / A.shape[0]
        return ANA.transpose(1, 2).reshape(1, B * T, B * T), torch.block_diag(*A.mean(0))[None]
