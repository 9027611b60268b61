"""The statistics of `foresight report`, pure and small: a mean over seeds with its Student-t confidence interval,
and a paired test of one objective against NTP on per-document scores (exact McNemar for 0/1 scores, Wilcoxon
signed-rank otherwise)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """The mean of `k` values (one per seed) and the half-width of its confidence interval: None with one value,
    where the sample standard deviation, and so the interval, is undefined."""

    mean: float
    half_width: float | None
    k: int

    def as_dict(self) -> dict:
        return asdict(self)


def mean_interval(values: list[float], confidence: float = 0.95) -> Interval:
    """mean ± t.ppf((1 + confidence) / 2, k - 1) * sd / sqrt(k), sd the sample standard deviation."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        raise ValueError("mean_interval of no values")
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, None, 1)
    half_width = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1) * stats.sem(values))
    return Interval(mean, half_width, len(values))


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired test of `other` against `reference` over `pairs` documents.

    test: "mcnemar" (every value 0 or 1; `discordant` = (b, c): b documents only the reference got right, c only
    the other) or "wilcoxon" (signed-rank on other - reference). mean_difference: mean of other - reference."""

    test: str
    p: float
    pairs: int
    mean_difference: float
    discordant: tuple[int, int] | None = None

    def as_dict(self) -> dict:
        return {**asdict(self), "discordant": list(self.discordant) if self.discordant else None}


def paired_test(reference: list[float], other: list[float]) -> PairedTest:
    """McNemar's exact test when every value is 0 or 1, else the Wilcoxon signed-rank test; p = 1.0 when the two
    never differ (neither test has anything to count)."""
    reference, other = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    if reference.shape != other.shape or reference.ndim != 1 or len(reference) == 0:
        raise ValueError(f"paired_test needs two equally long, non-empty lists; got {reference.shape}, {other.shape}")
    differences = other - reference
    mean_difference = float(differences.mean())
    if np.isin(reference, (0.0, 1.0)).all() and np.isin(other, (0.0, 1.0)).all():
        b = int(((reference == 1) & (other == 0)).sum())
        c = int(((reference == 0) & (other == 1)).sum())
        p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
        return PairedTest("mcnemar", p, len(reference), mean_difference, (b, c))
    if not differences.any():
        return PairedTest("wilcoxon", 1.0, len(reference), mean_difference)
    p = float(stats.wilcoxon(differences).pvalue)
    return PairedTest("wilcoxon", 1.0 if math.isnan(p) else p, len(reference), mean_difference)
