"""BERT-style masking for the encoder (MLM) objective."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sigprop.errors import SigpropError

IGNORE = -100  # target value ignored by cross-entropy


def mlm_mask(
    tokens: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    p: float = 0.25,
    generator: torch.Generator | None = None,
    special_ids: Iterable[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose each non-special position with probability p; of those 80% -> mask_id, 10% -> a random
    (non-special) token, 10% unchanged. Returns (inputs, targets): targets hold the original token at
    chosen positions and -100 elsewhere. p = 0.25 is the Crammed-BERT setting of the paper."""
    if not 0.0 <= p <= 1.0:
        raise SigpropError(f"mask probability p must be in [0, 1], got {p!r}")
    specials = torch.tensor(sorted({int(i) for i in special_ids} | {int(mask_id)}), dtype=tokens.dtype, device=tokens.device)
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=tokens.device)
    allowed[specials[(specials >= 0) & (specials < vocab_size)].long()] = False
    candidates = allowed.nonzero().squeeze(1).to(tokens.dtype)
    if candidates.numel() == 0:
        raise SigpropError(f"vocab_size {vocab_size} leaves no non-special token to sample; accepted: > number of special ids")

    rand = lambda: torch.rand(tokens.shape, generator=generator, device=tokens.device)  # noqa: E731
    chosen = (rand() < p) & ~torch.isin(tokens, specials)
    u = rand()
    to_mask = chosen & (u < 0.8)
    to_random = chosen & (u >= 0.8) & (u < 0.9)
    random_tokens = candidates[torch.randint(candidates.numel(), tokens.shape, generator=generator, device=tokens.device)]

    inputs = torch.where(to_mask, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(to_random, random_tokens, inputs)
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    return inputs, targets
