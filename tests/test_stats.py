"""Seed statistics: intervals and paired differences on inputs whose answers are known by hand."""

import math

import pytest

from spade4d.evaluation.stats import mean_interval, paired_difference


def test_mean_interval_matches_the_t_table():
    # 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.sd == pytest.approx(1.0) and iv.n == 3
    assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (iv.low, iv.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-6)
    assert iv.text() == "2.00 ± 2.48"
    # two values: t(0.975, 1) = 12.706205; 90 %: t(0.95, 2) = 2.919986
    assert mean_interval([0.0, 2.0]).half_width == pytest.approx(12.706205 * math.sqrt(2) / math.sqrt(2), rel=1e-6)
    assert mean_interval([1.0, 2.0, 3.0], 0.90).half_width == pytest.approx(2.919986 / math.sqrt(3), rel=1e-6)


def test_one_seed_has_no_width_and_says_so_and_bad_input_is_refused():
    iv = mean_interval([42.0])
    assert (iv.low, iv.mean, iv.high, iv.n) == (42.0, 42.0, 42.0, 1) and not iv.excludes_zero()
    assert iv.text() == "42.00 (1 seed)"
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])
    with pytest.raises(ValueError, match="NaN"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], 1.5)


def test_pairing_by_seed_finds_a_difference_the_unpaired_intervals_hide():
    # the seed moves both variants a lot; the variant adds exactly 1 to 1.2 on every seed
    base = {0: 10.0, 1: 30.0, 2: 50.0}
    better = {0: 11.0, 1: 31.2, 2: 51.1, 7: 99.0}  # seed 7 ran for one variant only: left out
    a, b = mean_interval(better.values()), mean_interval(base.values())
    assert a.low < b.high  # unpaired: the intervals overlap
    d = paired_difference(better, base)
    assert d.n == 3 and d.mean == pytest.approx(1.1) and d.excludes_zero() and d.low > 0
    assert not paired_difference({0: 1.0, 1: -1.0}, {0: 0.0, 1: 0.0}).excludes_zero()
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_a_benchmark_summary_holds_the_intervals_of_its_runs():
    from spade4d.evaluation.stats import summarise_runs

    runs = {
        "head": {0: {"R@50": 10.0, "OOV": 0.0}, 1: {"R@50": 20.0, "OOV": 0.0}, 2: {"R@50": 30.0, "OOV": 0.0}},
        "chain": {0: {"R@50": 12.0, "OOV": 5.0}, 1: {"R@50": 22.5, "OOV": 5.0}, 2: {"R@50": 31.5, "OOV": 8.0}},
    }
    out = summarise_runs(runs, ["R@50", "OOV"], {"chain - head": ("chain", "head"), "absent": ("llm", "head")})
    head = out["rows"]["head"]["R@50"]
    assert head["mean"] == 20.0 and head["sd"] == pytest.approx(10.0) and head["n"] == 3
    assert head["high"] - 20.0 == pytest.approx(4.302653 * 10.0 / math.sqrt(3), rel=1e-6)
    assert out["rows"]["head"]["OOV"]["high"] == out["rows"]["head"]["OOV"]["low"] == 0.0
    assert set(out["differences"]) == {"chain - head"}  # a difference whose variant never ran is left out
    d = out["differences"]["chain - head"]["R@50"]  # per seed: 2, 2.5, 1.5
    assert d["mean"] == pytest.approx(2.0) and d["sd"] == pytest.approx(0.5)
    assert d["low"] == pytest.approx(2.0 - 4.302653 * 0.5 / math.sqrt(3), rel=1e-6) and d["low"] > 0
    assert out["differences"]["chain - head"]["OOV"]["mean"] == pytest.approx(6.0)
