"""Statistics for comparing trained variants over seeds: a mean with its Student-t confidence interval, and the
paired difference of two variants run with the same seeds.

A benchmark row is only a claim when its interval says so: with ``n`` seeds the half-width of a 95 % interval is
``t(0.975, n - 1) * sd / sqrt(n)`` (8.98 sd at n = 2, 2.48 sd at n = 3, 1.24 sd at n = 5). Pairing by seed removes
what the seed does to both variants alike (the data draw, the initialisation), so a paired difference can be
significant where the two unpaired intervals overlap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    sd: float  # sample standard deviation (n - 1); 0 for one value
    n: int
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference the seeds support)."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 2) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def as_dict(self) -> dict:
        return asdict(self)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` with its two-sided Student-t interval; one value gives an interval of no width (and
    ``n = 1`` says so). NaN values are refused: a failed run must not pass as a number."""
    from scipy.stats import t as student_t

    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no values: an interval needs at least one seed")
    if any(math.isnan(x) for x in xs):
        raise ValueError(f"a value is NaN ({xs}): a run failed or a metric is missing")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, mean, mean, 0.0, 1, confidence)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, sd, n, confidence)


def paired_difference(a: Mapping, b: Mapping, confidence: float = 0.95) -> Interval:
    """``a - b`` over the seeds both variants ran (``{seed: value}`` each), as an interval; seeds only one variant
    has are left out, and none in common is refused."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"no seed in common (a: {sorted(a)}, b: {sorted(b)})")
    return mean_interval([float(a[s]) - float(b[s]) for s in common], confidence)


def summarise_runs(
    results: Mapping[str, Mapping[int, Mapping[str, float]]],
    metrics: Sequence[str],
    differences: Mapping[str, tuple[str, str]] = {},
    confidence: float = 0.95,
) -> dict:
    """A benchmark's runs (``{variant: {seed: {metric: value}}}``) as intervals: ``rows`` (variant -> metric ->
    :class:`Interval` as a dict) and ``differences`` (name -> metric -> the paired ``a - b`` interval, for every
    ``name: (a, b)`` whose two variants ran)."""
    rows = {
        r: {m: mean_interval([v[m] for v in by_seed.values()], confidence).as_dict() for m in metrics}
        for r, by_seed in results.items()
    }
    diffs = {}
    for name, (a, b) in differences.items():
        if a in results and b in results:
            diffs[name] = {
                m: paired_difference(
                    {s: v[m] for s, v in results[a].items()}, {s: v[m] for s, v in results[b].items()}, confidence
                ).as_dict()
                for m in metrics
            }
    return {"rows": rows, "differences": diffs}
