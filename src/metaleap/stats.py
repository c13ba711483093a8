"""Confidence intervals for the numbers that reports publish.

Every published mean carries a two-sided Student-t interval over its samples, and every
comparison between two methods is a *paired* difference: the same (seed, task) trained from
both initializations, so the variation shared by both (an easy task, a lucky seed) cancels.
The t-interval treats the pairs as independent; pairs that share a seed are not quite, which
the reports state beside the tables.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
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
        def number(value: float) -> str:
            text = f"{scale * value:.{digits}f}"
            return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"

        if self.low is None or self.high is None:
            return number(self.mean)
        return f"{number(self.mean)} [{number(self.low)}, {number(self.high)}]"


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


def paired_groups(a: Groups, b: Groups, level: float = 0.95) -> Interval:
    """:func:`paired_difference` ``a − b`` over the groups both have, value by value."""
    common = [k for k in a if k in b]
    if not common:
        raise ValueError("the samples have no group in common")
    return paired_difference(pooled({k: a[k] for k in common}),
                             pooled({k: b[k] for k in common}), level)


def compare(samples: Mapping[str, Groups], reference: str, level: float = 0.95
            ) -> dict[str, Interval]:
    """Each sample's paired difference from ``reference`` (``sample − reference``).

    Samples sharing no group with ``reference`` (a partial run) are left out, as is every
    sample when ``reference`` is absent.
    """
    if reference not in samples:
        return {}
    ref = samples[reference]
    return {name: paired_groups(groups, ref, level) for name, groups in samples.items()
            if name != reference and any(k in ref for k in groups)}
