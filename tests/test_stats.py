"""Confidence intervals against hand-computed values."""

import math

import pytest

from metaleap.stats import (
    by_group,
    compare,
    differences,
    mean_ci,
    paired_difference,
    paired_groups,
    pooled,
    regroup,
    sign_test,
)


def test_mean_ci_matches_the_t_interval_by_hand():
    # values 1, 2, 3, 4: mean 2.5, sample std sqrt(5/3), t_{0.975, 3} = 3.182446305
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert ci.mean == 2.5 and ci.n == 4
    assert ci.low == pytest.approx(2.5 - half, abs=1e-9)
    assert ci.high == pytest.approx(2.5 + half, abs=1e-9)
    assert ci.format(digits=2) == f"2.50 [{2.5 - half:.2f}, {2.5 + half:.2f}]"


def test_mean_ci_level_and_single_value():
    # t_{0.95, 1} = 6.313751515: a 90% interval from two values 0 and 2 (std sqrt 2)
    ci = mean_ci([0.0, 2.0], level=0.9)
    assert ci.high == pytest.approx(1 + 6.313751514675 * math.sqrt(2) / math.sqrt(2))
    one = mean_ci([3.0])
    assert (one.mean, one.low, one.high) == (3.0, None, None)
    assert one.format() == "3.0" and not one.excludes_zero
    assert (-mean_ci([-0.01, 0.01])).format() == "0.0 [-0.1, 0.1]"  # never "-0.0"
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=1.5)


def test_paired_difference_cancels_what_pairs_share():
    # Large spread across pairs, constant difference: the interval collapses to the difference.
    a, b = [10.0, 50.0, 90.0], [9.0, 49.0, 89.0]
    assert mean_ci(a).low < 20
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(1.0)
    assert diff.low == pytest.approx(1.0) and diff.high == pytest.approx(1.0)
    assert diff.excludes_zero
    assert not paired_difference([1.0, 0.0], [0.0, 1.0]).excludes_zero
    with pytest.raises(ValueError, match="length"):
        paired_difference([1.0], [1.0, 2.0])


def test_groups_pair_by_key_and_position_and_compare_with_a_reference():
    a = {"1": [5.0, 6.0], "0": [1.0, 2.0]}
    b = {"0": [0.0, 0.0], "1": [4.0, 4.0], "2": [9.0, 9.0]}
    assert pooled(a) == [5.0, 6.0, 1.0, 2.0]
    diff = paired_groups(a, b)  # pairs (5, 4), (6, 4), (1, 0), (2, 0): seed "2" is b's alone
    assert (diff.mean, diff.n) == (1.5, 4)
    with pytest.raises(ValueError, match="no group in common"):
        paired_groups({"3": [1.0]}, b)
    out = compare({"ref": b, "a": a, "late": {"7": [1.0]}}, "ref")
    assert list(out) == ["a"] and out["a"] == diff
    assert compare({"a": a}, "ref") == {}


def test_negated_interval_reads_the_difference_the_other_way_round():
    d = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert ((-d).mean, (-d).low, (-d).high) == (-d.mean, -d.high, -d.low)
    assert (-mean_ci([3.0])).low is None


def test_group_level_interval_takes_each_group_mean_as_one_value():
    # seeds "0" and "1" with means 2 and 4: t_{0.975, 1} · sd(2, 4) / √2 = 12.7062 · 1
    groups = {"0": [1.0, 2.0, 3.0], "1": [4.0, 4.0, 4.0]}
    ci = by_group(groups)
    assert (ci.mean, ci.n) == (3.0, 2)
    assert (ci.low, ci.high) == pytest.approx((3 - 12.706204736174698, 3 + 12.706204736174698))
    assert ci.bounds() == "[-9.7, 15.7]" and mean_ci([1.0]).bounds() == ""
    # the pooled interval over the same six values is far narrower: it treats them as independent
    assert mean_ci(pooled(groups)).high < ci.high
    # compare with a unit: the per-seed mean differences, 1 and 3
    by_seed = compare({"a": groups, "ref": {"0": [0.0, 1.0, 2.0], "1": [1.0, 1.0, 1.0]}}, "ref",
                      unit=by_group)["a"]
    assert by_seed.mean == 2.0 and by_seed.n == 2
    assert by_seed.low == pytest.approx(2 - 12.706204736174698)
    with pytest.raises(ValueError, match="length in group 0"):
        differences({"0": [1.0]}, {"0": [1.0, 2.0]})


def test_regroup_and_sign_test():
    values = {"mnist/0": [1.0], "mnist/1": [3.0], "digits/0": [-1.0], "digits/1": [-3.0]}
    assert regroup(values, lambda k: k.split("/")[0]) == {"mnist": [1.0, 3.0],
                                                          "digits": [-1.0, -3.0]}
    assert regroup(values, lambda k: k.split("/")[1]) == {"0": [1.0, -1.0], "1": [3.0, -3.0]}
    # 7 of 7 positive: two-sided p = 2 / 2^7; zeros are left out
    assert sign_test([0.5] * 7 + [0.0]) == (7, 0, pytest.approx(2 / 2 ** 7))
    assert sign_test([1.0, -1.0]) == (1, 1, pytest.approx(1.0))
    assert sign_test([]) == (0, 0, 1.0)
