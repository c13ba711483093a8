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
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy.stats import t as student_t


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

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        """``mean [low, high]`` scaled (e.g. by 100 for percentages)."""
        if self.low is None or self.high is None:
            return f"{scale * self.mean:.{digits}f}"
        return (f"{scale * self.mean:.{digits}f} [{scale * self.low:.{digits}f}, "
                f"{scale * self.high:.{digits}f}]")


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
    half = student_t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``a[i] - b[i]`` over pairs, with its t-interval (a paired t-test's interval)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b, strict=True)], level)
