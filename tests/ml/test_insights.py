"""Insights on cached features: planted flips, copies and foreign photos are found; the interval math."""

from __future__ import annotations

import math

import pytest

from vision_trainer.ml.metrics import mcnemar_test, wilson_interval


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [(8, 10, 0.4902, 0.9433), (50, 100, 0.4038, 0.5962), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
     (95, 100, 0.8883, 0.9785)],
)
def test_wilson_interval_matches_published_values(correct: int, total: int, low: float, high: float) -> None:
    got = wilson_interval(correct, total)
    assert got == pytest.approx((low, high), abs=5e-4)


def test_wilson_interval_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    narrow, wide = wilson_interval(90, 100), wilson_interval(9, 10)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]
    assert wilson_interval(8, 10, z=2.576)[0] < wilson_interval(8, 10)[0]  # 99 % is wider than 95 %
    with pytest.raises(ValueError, match="between 0 and total"):
        wilson_interval(11, 10)


def test_mcnemar_exact_for_few_discordant_photos() -> None:
    # A right and B wrong on 10 photos, the reverse on 2: two-sided binomial p = 2 * P(X <= 2 | n=12, 1/2).
    a = [True] * 10 + [False] * 2 + [True] * 30
    b = [False] * 10 + [True] * 2 + [True] * 30
    result = mcnemar_test(a, b)
    assert (result["b"], result["c"]) == (10, 2)
    assert result["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_mcnemar_chi_square_with_continuity_correction() -> None:
    a = [True] * 30 + [False] * 15
    b = [False] * 30 + [True] * 15
    result = mcnemar_test(a, b)
    assert result["statistic"] == pytest.approx(14**2 / 45)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(14**2 / 45 / 2)))
    assert 0.03 < result["p_value"] < 0.04  # chi-square(1) survival of 4.356


def test_mcnemar_identical_models_and_mismatched_lengths() -> None:
    assert mcnemar_test([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError, match="same photos"):
        mcnemar_test([True], [True, False])
