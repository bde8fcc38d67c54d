"""Seed statistics for verdicts: a block's gap to a baseline over paired seeds, and what it decides.

A claim is decided by numbers with their noise (issue 10): with n >= MIN_SEEDS seeds, the per-seed relative
gap g_s = 100 (L_block,s - L_base,s) / L_base,s in % (seed s of both runs sees the same data order) has a mean
and a sample std. The gap *matches* when |mean| <= max(2 std, FLOOR_PCT); otherwise the block is *better*
(mean < 0, lower loss) or *worse*. With fewer seeds nothing is decided.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3
#: gaps within 1% count as a match even when the seed spread is smaller (issue 10's rule)
FLOOR_PCT = 1.0

REPRODUCED, NOT_REPRODUCED, REVERSED = "reproduced", "not reproduced", "reversed"


def not_decidable(why: str) -> str:
    return f"not decidable ({why})"


def too_few_seeds(n: int, which: str = "") -> str:
    """The verdict below MIN_SEEDS seeds: 'not decidable (1 seed<which>, need 3)'."""
    return not_decidable(f"{n} seed{'s' * (n != 1)}{which}, need {MIN_SEEDS}")


def band(std: float, n: int) -> float:
    """Half-width of the 'matches' band of a gap over n seeds: max(2 std, FLOOR_PCT) (FLOOR_PCT alone with one seed)."""
    return max(2 * std, FLOOR_PCT) if n >= 2 else FLOOR_PCT


def mean_std(values: Sequence[float]) -> list[float]:
    """[mean, sample std] of a per-seed quantity, as result.json stores it (std NaN for one value)."""
    v = np.asarray(values, dtype=float)
    return [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan]


@dataclass(frozen=True)
class Gap:
    """A relative gap in %, over paired seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n >= 2 else math.nan

    @property
    def band(self) -> float:
        """Half-width of the 'matches' band (see `band`)."""
        return band(self.std, self.n)

    def outcome(self) -> str:
        """matches | better | worse, or 'not decidable (...)' below MIN_SEEDS seeds."""
        if self.n < MIN_SEEDS:
            return too_few_seeds(self.n)
        if abs(self.mean) <= self.band:
            return "matches"
        return "better" if self.mean < 0 else "worse"

    def to_dict(self) -> dict:
        """mean, std, n, the match band and the per-seed values (for result.json)."""
        return {"mean": self.mean, "std": self.std, "n": self.n, "band": self.band, "values": list(self.values)}

    def text(self) -> str:
        """'+2.31% ± 0.40 (3 seeds)': mean ± std, or the single value."""
        if self.n == 0:
            return "no runs"
        if self.n == 1:
            return f"{self.mean:+.2f}% (1 seed)"
        return f"{self.mean:+.2f}% ± {self.std:.2f} ({self.n} seeds)"


def rel_gap(value: float, base: float) -> float:
    return 100.0 * (value - base) / base


def paired_gap(block: Mapping[int, float], base: Mapping[int, float]) -> Gap:
    """The gap over the seeds both have (finite losses only), in seed order."""
    seeds = sorted(s for s in block if s in base and math.isfinite(block[s]) and math.isfinite(base[s]))
    return Gap(tuple(rel_gap(block[s], base[s]) for s in seeds))


def verdict_for(gap: Gap, expect: str) -> str:
    """The claim's verdict when it expects `expect` ('matches', 'worse' or 'better') of the block against the baseline.

    matches: matches or better -> reproduced, worse -> not reproduced.
    worse:   worse -> reproduced, matches -> not reproduced, better -> reversed.
    better:  better -> reproduced, matches -> not reproduced, worse -> reversed."""
    out = gap.outcome()
    if out.startswith("not decidable"):
        return out
    if expect == "matches":
        return NOT_REPRODUCED if out == "worse" else REPRODUCED
    if expect == "worse":
        return {"worse": REPRODUCED, "matches": NOT_REPRODUCED, "better": REVERSED}[out]
    if expect == "better":
        return {"better": REPRODUCED, "matches": NOT_REPRODUCED, "worse": REVERSED}[out]
    raise ValueError(f"expect must be 'matches', 'worse' or 'better', got {expect!r}")


def caught_up(steps: Sequence[float], means: Sequence[float], bands: Sequence[float]) -> float | None:
    """The first x from which the gap stays at or below its band (+band: no longer worse beyond noise) to the end;
    None if it never does. A block ahead of its baseline counts as caught up."""
    hit = None
    for x, m, b in zip(steps, means, bands):
        if math.isfinite(m) and m <= b:
            hit = x if hit is None else hit
        else:
            hit = None
    return hit
