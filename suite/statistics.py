"""The statistics of `foresight report`, pure and small. The training seed is the unit of replication: a mean
over seeds with its Student-t confidence interval, and `seed_test`, which compares an objective with NTP across
seeds (a paired t-test over per-seed scores, the smallest difference it can detect, and a hierarchical bootstrap
interval over seeds, then documents). `paired_test` compares two models' documents within one seed (exact McNemar
for 0/1 scores, Wilcoxon signed-rank otherwise): a detail of one training run, never a verdict on an objective."""

from __future__ import annotations

import math
import warnings
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


MIN_SEEDS = 3
"""Fewer training seeds than this give no p-value: a test across 2 seeds has 1 degree of freedom, and the seeds
are the unit of replication (documents within a seed share one trained model)."""
POWER = 0.8
"""The power at which `SeedTest.detectable` is stated."""
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class SeedTest:
    """`other` against `reference` with the training seed as the unit of replication.

    difference: the mean over seeds of other - reference (paired seeds: the mean of per-seed differences).
    half_width: of its 95% Student-t interval over seeds; None with fewer than 2 seeds.
    p: two-sided, a paired t-test over the per-seed values (seeds both have), else Welch's t-test; None with fewer
        than MIN_SEEDS seeds ("too few seeds").
    detectable: the smallest |difference| this test finds at `alpha` with POWER, given the spread the seeds
        showed (noncentral t); None where the test is not run or the seeds did not vary.
    bootstrap: the 95% percentile interval of the difference by a hierarchical bootstrap (resample seeds, then
        documents within each resampled seed), where per-document scores exist; a description of the
        uncertainty, not the test (with 3 seeds it has only 10 distinct seed draws)."""

    test: str
    seeds: int
    difference: float
    half_width: float | None
    p: float | None
    detectable: float | None
    bootstrap: tuple[float, float] | None = None

    def as_dict(self) -> dict:
        return {**asdict(self), "bootstrap": None if self.bootstrap is None else list(self.bootstrap)}


def seed_test(reference: dict[int, float], other: dict[int, float], alpha: float = 0.05,
              items: tuple[dict[int, list], dict[int, list]] | None = None) -> SeedTest:
    """reference, other: {seed: the seed's score}. items: per-document scores {seed: [...]} of each, in the same
    document order, for the hierarchical bootstrap."""
    common = sorted(set(reference) & set(other))
    paired = len(common) >= MIN_SEEDS or (len(common) == len(reference) == len(other) and common)
    if paired:
        differences = np.array([other[s] - reference[s] for s in common])
        k = len(differences)
        interval = mean_interval(differences.tolist())
        p = detectable = None
        if k >= MIN_SEEDS:
            sd = float(differences.std(ddof=1))
            if sd < 1e-12 * max(1.0, abs(float(differences.mean()))):  # every seed differs by the same amount
                p = 1.0 if differences.mean() == 0 else 0.0
            else:
                p = _quietly(stats.ttest_rel, [other[s] for s in common], [reference[s] for s in common])
                detectable = _detectable(sd / math.sqrt(k), k - 1, alpha)
        spread = None
        if items is not None and all(s in items[0] and s in items[1] and len(items[0][s]) == len(items[1][s])
                                     for s in common):
            spread = hierarchical_bootstrap([np.asarray(items[1][s], float) - np.asarray(items[0][s], float)
                                             for s in common])
        return SeedTest("paired t", k, interval.mean, interval.half_width, p, detectable, spread)
    ours, theirs = np.array(list(other.values()), float), np.array(list(reference.values()), float)
    difference = float(ours.mean() - theirs.mean())
    if min(len(ours), len(theirs)) < MIN_SEEDS:
        return SeedTest("welch t", min(len(ours), len(theirs)), difference, None, None, None)
    parts = [values.var(ddof=1) / len(values) for values in (ours, theirs)]
    se = math.sqrt(sum(parts))
    # Welch-Satterthwaite degrees of freedom, as scipy's test uses them
    df = sum(parts) ** 2 / sum(part ** 2 / (len(values) - 1) for part, values in zip(parts, (ours, theirs))) \
        if se > 0 else len(ours) + len(theirs) - 2
    if se < 1e-12 * max(1.0, abs(difference)):
        p = 1.0 if difference == 0 else 0.0
    else:
        p = _quietly(stats.ttest_ind, ours, theirs, equal_var=False)
    half_width = float(stats.t.ppf(0.975, df) * se)
    return SeedTest("welch t", min(len(ours), len(theirs)), difference, half_width, p, _detectable(se, df, alpha))


def _quietly(test, *args, **kwargs) -> float:
    """A scipy test's p-value, without its warning about nearly constant samples (one model scoring the same on
    every seed is a legitimate result here, and the difference's spread is checked before)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(test(*args, **kwargs).pvalue)


def _detectable(standard_error: float, df: float, alpha: float) -> float | None:
    """The difference delta at which a two-sided t-test of level alpha rejects with probability POWER, for a
    difference estimate of this standard error: solve P(|T| > t_crit) = POWER for T noncentral t with df degrees
    of freedom and noncentrality delta / standard_error."""
    if not standard_error > 0:
        return None
    from scipy.integrate import quad
    from scipy.optimize import brentq

    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(noncentrality: float) -> float:
        # T = (Z + noncentrality) / sqrt(V / df), V ~ chi2(df): integrate the normal tails over V (scipy's nct
        # cdf loses all precision for a large noncentrality at few degrees of freedom)
        def rejected(v: float) -> float:
            scale = critical * math.sqrt(v / df)
            tails = stats.norm.sf(scale - noncentrality) + stats.norm.cdf(-scale - noncentrality)
            return tails * stats.chi2.pdf(v, df)

        return quad(rejected, 0, math.inf, limit=200)[0] - POWER

    high = 1.0
    while shortfall(high) < 0:  # widen the bracket (the t tail is heavy at few degrees of freedom)
        high *= 2
    return float(brentq(shortfall, 0.0, high, xtol=1e-10) * standard_error)


def hierarchical_bootstrap(differences: list[np.ndarray], resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of the mean difference when seeds are drawn with replacement and, within each
    drawn seed, its documents' differences are drawn with replacement (a two-stage cluster bootstrap).
    differences: one array of per-document differences per seed. Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    k = len(differences)
    chosen = rng.integers(k, size=(resamples, k))  # stage 1: seeds
    means = np.zeros((resamples, k))
    for slot in range(k):  # stage 2: documents, drawn afresh for every drawn seed
        for s, values in enumerate(differences):
            rows = np.nonzero(chosen[:, slot] == s)[0]
            if len(rows):
                means[rows, slot] = values[rng.integers(len(values), size=(len(rows), len(values)))].mean(axis=1)
    low, high = np.percentile(means.mean(axis=1), [2.5, 97.5])
    return float(low), float(high)
