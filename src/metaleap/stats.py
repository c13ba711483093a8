"""Confidence intervals for the numbers that reports publish.

Every published mean carries a two-sided Student-t interval over its samples, and every
comparison between two methods is a *paired* difference: the same (seed, task) trained from
both initializations, so the variation shared by both (an easy task, a lucky seed) cancels.
The t-interval treats the pairs as independent; pairs that share a seed are not quite. So
reports also give a *group-level* interval (:func:`by_group`): one value per seed (or per data
set), the mean over its pairs, with df = groups − 1. It covers the variation between
meta-training runs that the pair-level interval misses, and with few seeds it is wide.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

#: Samples grouped by a key shared across methods (a seed), each group in a fixed order (the
#: seed's held-out tasks): value ``i`` of group ``k`` pairs with value ``i`` of another
#: method's group ``k``.
Groups = Mapping[str, Sequence[float]]


@dataclass(frozen=True)
class Interval:
    """A sample mean and its confidence interval; the bounds are ``None`` below two samples."""

    mean: float
    low: float | None
    high: float | None
    n: int
    level: float

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of zero (a supported difference)."""
        return self.low is not None and (self.low > 0 or self.high < 0)  # type: ignore[operator]

    def __neg__(self) -> Interval:
        """The interval of the negated quantity (a difference read the other way round)."""
        return Interval(-self.mean, None if self.high is None else -self.high,
                        None if self.low is None else -self.low, self.n, self.level)

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        """``mean [low, high]`` scaled (e.g. by 100 for percentages)."""
        if self.low is None or self.high is None:
            return _number(self.mean, scale, digits)
        return f"{_number(self.mean, scale, digits)} {self.bounds(scale, digits)}"

    def bounds(self, scale: float = 1.0, digits: int = 1) -> str:
        """``[low, high]`` scaled, or ``""`` without bounds."""
        if self.low is None or self.high is None:
            return ""
        return f"[{_number(self.low, scale, digits)}, {_number(self.high, scale, digits)}]"


def _number(value: float, scale: float, digits: int) -> str:
    text = f"{scale * value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` with the two-sided Student-t interval at ``level``."""
    if not values:
        raise ValueError("a confidence interval needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    mean = statistics.fmean(values)
    n = len(values)
    if n < 2:
        return Interval(mean, None, None, n, level)
    from scipy.stats import t as student_t  # scipy is slow to import: only where used

    half = student_t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``a[i] - b[i]`` over pairs, with its t-interval (a paired t-test's interval)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b, strict=True)], level)


def pooled(groups: Groups) -> list[float]:
    """Every value of ``groups``, group after group."""
    return [x for values in groups.values() for x in values]


def differences(a: Groups, b: Groups) -> dict[str, list[float]]:
    """``a − b`` value by value, in the groups both have."""
    common = [k for k in a if k in b]
    if not common:
        raise ValueError("the samples have no group in common")
    out = {}
    for k in common:
        if len(a[k]) != len(b[k]):
            raise ValueError(f"paired samples differ in length in group {k}: "
                             f"{len(a[k])} and {len(b[k])}")
        out[k] = [x - y for x, y in zip(a[k], b[k], strict=True)]
    return out


def paired_groups(a: Groups, b: Groups, level: float = 0.95) -> Interval:
    """:func:`paired_difference` ``a − b`` over the groups both have, value by value."""
    return mean_ci(pooled(differences(a, b)), level)


def by_group(groups: Groups, level: float = 0.95) -> Interval:
    """The t-interval over the groups' means (df = groups − 1): the group (a seed, a data
    set) is the unit, not the value. Its mean is the pooled mean when the groups are equal in
    size."""
    return mean_ci([statistics.fmean(v) for v in groups.values()], level)


def regroup(groups: Groups, key: Callable[[str], str]) -> dict[str, list[float]]:
    """The values of ``groups`` gathered under ``key(group)`` (e.g. "mnist/0" → "mnist")."""
    out: dict[str, list[float]] = {}
    for k, values in groups.items():
        out.setdefault(key(k), []).extend(values)
    return out


def sign_test(values: Sequence[float]) -> tuple[int, int, float]:
    """(positives, negatives, two-sided p) of the exact sign test; zeros are left out."""
    positive, negative = sum(v > 0 for v in values), sum(v < 0 for v in values)
    if positive + negative == 0:
        return 0, 0, 1.0
    from scipy.stats import binomtest  # scipy is slow to import: only where used

    return positive, negative, float(binomtest(positive, positive + negative).pvalue)


def compare(samples: Mapping[str, Groups], reference: str, level: float = 0.95,
            unit: Callable[[Groups], Interval] | None = None) -> dict[str, Interval]:
    """Each sample's paired difference from ``reference`` (``sample − reference``): over the
    pooled pairs, or ``unit(differences)`` (e.g. :func:`by_group`) when given.

    Samples sharing no group with ``reference`` (a partial run) are left out, as is every
    sample when ``reference`` is absent.
    """
    if reference not in samples:
        return {}
    ref = samples[reference]
    interval = unit or (lambda d: mean_ci(pooled(d), level))
    return {name: interval(differences(groups, ref)) for name, groups in samples.items()
            if name != reference and any(k in ref for k in groups)}
