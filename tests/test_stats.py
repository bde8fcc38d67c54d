"""Seed statistics behind every seeded verdict: the match band, the outcome, the claim verdict."""

from __future__ import annotations

import math

import pytest

from sigprop.recipes.stats import Gap, caught_up, paired_gap, verdict_for


def test_gap_mean_std_band_and_text():
    g = Gap((1.0, 2.0, 3.0))
    assert g.mean == 2.0 and g.std == pytest.approx(1.0) and g.band == pytest.approx(2.0)
    assert g.text() == "+2.00% ± 1.00 (3 seeds)"
    assert Gap((0.1, 0.2, 0.3)).band == 1.0  # the 1% floor when seeds agree closely
    assert Gap((0.5,)).band == 1.0 and Gap((0.5,)).text() == "+0.50% (1 seed)"


@pytest.mark.parametrize("values,outcome", [
    ((0.5, 0.8, 0.2), "matches"),  # inside the 1% floor
    ((3.0, 1.0, 5.0), "matches"),  # 3% mean, but 2 std = 4%
    ((2.3, 2.2, 2.4), "worse"),  # far outside 2 std = 0.2 and the 1% floor
    ((-2.3, -2.2, -2.4), "better"),
])
def test_outcome(values, outcome):
    assert Gap(values).outcome() == outcome


def test_fewer_than_three_seeds_decide_nothing():
    assert Gap((2.3, 2.2)).outcome() == "not decidable (2 seeds, need 3)"
    assert verdict_for(Gap((2.3,)), "matches") == "not decidable (1 seed, need 3)"


def test_verdicts_for_each_expectation():
    worse, match, better = Gap((2.3, 2.2, 2.4)), Gap((0.1, 0.2, 0.3)), Gap((-2.3, -2.2, -2.4))
    assert [verdict_for(g, "matches") for g in (worse, match, better)] == ["not reproduced", "reproduced", "reproduced"]
    assert [verdict_for(g, "worse") for g in (worse, match, better)] == ["reproduced", "not reproduced", "reversed"]
    with pytest.raises(ValueError):
        verdict_for(worse, "faster")


def test_paired_gap_uses_common_finite_seeds_in_order():
    g = paired_gap({0: 4.4, 1: 4.2, 2: math.nan, 3: 5.0}, {0: 4.0, 1: 4.2, 2: 4.0})
    assert g.values == pytest.approx((10.0, 0.0))


def test_caught_up_needs_the_gap_to_stay_at_or_below_its_band():
    steps = [1, 2, 3, 4, 5]
    assert caught_up(steps, [5, 0.5, 3, 0.9, 0.2], [1] * 5) == 4
    assert caught_up(steps, [5, 4, 3, 2, 1.5], [1] * 5) is None
    assert caught_up(steps, [0.1] * 5, [1] * 5) == 1
    assert caught_up(steps, [5, -3, -2, 0.5, 0.9], [1] * 5) == 2  # ahead of the baseline counts as caught up
