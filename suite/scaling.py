"""Across sizes: where does an objective overtake next-token prediction? For every objective measured at three or
more sizes, each score is fitted against non-embedding parameters N (the trunk's blocks) and against training
FLOPs, the difference objective - NTP is a curve, and the crossover (the size where the objective goes from worse
than NTP to better, or back) comes with an interval from a bootstrap over training seeds.

The form of the fit follows a stated rule: with 4 or more sizes, a saturating power law in x (N or FLOPs),
score = E + A (x / x0)^-alpha (x0 the smallest size measured, alpha in (0, 3]); with 3 sizes, where 3 parameters
would pass through every point, the log-linear form score = a + b log10(x / x0). A power law that scipy cannot fit
falls back to the log-linear form, and says so. The bootstrap (`scipy.stats.bootstrap`, percentile intervals)
resamples the seeds every size and objective share, the same seeds for the objective and NTP (their scores are
paired by seed); with 3 seeds it has only 10 distinct resamples, so its intervals are coarse and said to be.
A crossover past the largest size measured is an extrapolation; past 10x that size it is flagged as one the data
cannot support."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

POWER, LOGLINEAR = "power law", "log-linear"
MIN_SIZES = 3
"""Sizes an objective (and NTP) needs before the report fits anything."""
POWER_SIZES = 4
"""Sizes from which the saturating power law is fitted (below: log-linear)."""
EXTRAPOLATION = 10.0
"""A crossover beyond this many times the largest size measured is flagged."""
SEARCH = 1000.0
"""The crossover is looked for up to this many times the largest size measured."""
RESAMPLES = 999


@dataclass
class Fit:
    form: str
    params: tuple[float, ...]
    x0: float
    note: str = ""

    def __call__(self, x) -> np.ndarray:
        z = np.asarray(x, dtype=float) / self.x0
        if self.form == POWER:
            E, A, alpha = self.params
            return E + A * z ** -alpha
        a, b = self.params
        return a + b * np.log10(z)

    @property
    def exponent(self) -> float:
        """alpha of the power law; the slope per decade of the log-linear form."""
        return self.params[2] if self.form == POWER else self.params[1]


def fit_curve(x: np.ndarray, y: np.ndarray, form: str | None = None) -> Fit:
    """The fit of means y at sizes x, of the form the rule picks (or `form`)."""
    from scipy.optimize import curve_fit

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x0 = float(x.min())
    form = form or (POWER if len(set(x)) >= POWER_SIZES else LOGLINEAR)
    z = np.log10(x / x0)
    slope, intercept = np.polyfit(z, y, 1)
    loglinear = Fit(LOGLINEAR, (float(intercept), float(slope)), x0)
    if form == LOGLINEAR:
        return loglinear
    start = (float(y[np.argmax(x)]), float(y[np.argmin(x)] - y[np.argmax(x)]), 0.5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(lambda x, E, A, alpha: E + A * (x / x0) ** -alpha, x, y, p0=start,
                                  bounds=([-np.inf, -np.inf, 1e-3], [np.inf, np.inf, 3.0]), maxfev=20000)
    except (RuntimeError, ValueError):
        loglinear.note = "the power law did not converge; log-linear instead"
        return loglinear
    if not 1.01e-3 < params[2] < 2.99:  # alpha at a bound: the data do not bend as a power law does
        loglinear.note = f"the power law's alpha went to its bound ({params[2]:.3g}); log-linear instead"
        return loglinear
    return Fit(POWER, tuple(float(p) for p in params), x0)


def crossover(difference, low: float, high: float) -> float | None:
    """The first x in [low, high] (on a log grid, refined by root-finding) where `difference(x)` changes sign;
    None where it keeps one sign."""
    from scipy.optimize import brentq

    grid = np.geomspace(low, high, 400)
    values = difference(grid)
    signs = np.sign(values)
    changes = np.nonzero(signs[:-1] * signs[1:] < 0)[0]
    if len(changes) == 0:
        exact = np.nonzero(values == 0)[0]
        return float(grid[exact[0]]) if len(exact) and 0 < exact[0] < len(grid) - 1 else None
    i = changes[0]
    return float(brentq(lambda x: float(difference(np.array([x]))[0]), grid[i], grid[i + 1]))


def analyse(x: dict[str, float], reference: dict[str, dict[int, float]], other: dict[str, dict[int, float]],
            higher_is_better: bool, resamples: int = RESAMPLES, seed: int = 0,
            x_other: dict[str, float] | None = None) -> dict:
    """One objective against the reference across sizes.

    Args:
        x: {size: N or FLOPs} of each size (the reference's; the objective's too unless `x_other`).
        reference: {size: {seed: score}} of NTP.
        other: {size: {seed: score}} of the objective.
        higher_is_better: The direction of the score.
        resamples: Bootstrap resamples over seeds.
        seed: The bootstrap's random seed.
        x_other: {size: FLOPs} of the objective where they differ from the reference's (extra heads' work).

    Returns the two fits, the crossover (None: no sign change up to SEARCH x the largest size), which way it goes,
    its bootstrap interval, the share of resamples that cross at all, the exponent intervals, the difference
    curve's band on a grid, and the flags (extrapolated, beyond EXTRAPOLATION x)."""
    from scipy.stats import bootstrap

    x_other = x if x_other is None else x_other
    sizes = sorted((size for size in x if size in x_other and reference.get(size) and other.get(size)),
                   key=lambda s: x[s])
    seeds = sorted(set.intersection(*[set(reference[s]) & set(other[s]) for s in sizes])) if sizes else []
    if len(sizes) < MIN_SIZES or not seeds:
        return {"sizes": sizes, "seeds": seeds, "fitted": False}
    xs, xs_other = np.array([x[s] for s in sizes], dtype=float), np.array([x_other[s] for s in sizes], dtype=float)
    ref = np.array([[reference[s][seed_] for s in sizes] for seed_ in seeds])  # [seeds, sizes]
    obj = np.array([[other[s][seed_] for s in sizes] for seed_ in seeds])
    form = POWER if len(sizes) >= POWER_SIZES else LOGLINEAR
    sign = 1.0 if higher_is_better else -1.0
    largest = float(max(xs.max(), xs_other.max()))
    low, high = float(min(xs.min(), xs_other.min())), largest * SEARCH
    grid = np.geomspace(low, largest * EXTRAPOLATION, 60)

    def fits(rows: np.ndarray) -> tuple[Fit, Fit]:
        return fit_curve(xs, ref[rows].mean(0), form), fit_curve(xs_other, obj[rows].mean(0), form)

    memo: dict[tuple, np.ndarray] = {}  # a resample is a multiset of seeds: few distinct ones with few seeds

    def statistic(rows: np.ndarray) -> np.ndarray:
        rows = np.sort(np.asarray(rows, dtype=int))
        key = tuple(rows)
        if key not in memo:
            ref_fit, obj_fit = fits(rows)
            at = crossover(lambda v: obj_fit(v) - ref_fit(v), low, high)
            memo[key] = np.array([math.log10(at) if at else np.inf, ref_fit.exponent, obj_fit.exponent,
                                  *(obj_fit(grid) - ref_fit(grid))])
        return memo[key]

    everything = np.arange(len(seeds))
    ref_fit, obj_fit = fits(everything)
    point = statistic(everything)
    at = None if math.isinf(point[0]) else 10 ** point[0]
    result = {"sizes": sizes, "seeds": seeds, "fitted": True, "form": form, "x": xs.tolist(),
              "x_other": xs_other.tolist(), "largest": largest,
              "reference_fit": ref_fit, "objective_fit": obj_fit, "note": ref_fit.note or obj_fit.note,
              "crossover": at, "grid": grid.tolist(), "difference": point[3:].tolist(),
              "reference_means": ref.mean(0).tolist(), "objective_means": obj.mean(0).tolist(),
              "better_beyond": None, "interval": None, "crossing_share": None, "exponents": None, "band": None}
    if at is not None:
        result["better_beyond"] = bool(sign * (obj_fit(at * 1.01) - ref_fit(at * 1.01)) > 0)
        result["extrapolated"] = at > largest
        result["beyond_limit"] = at > largest * EXTRAPOLATION
    if len(seeds) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            boot = bootstrap((everything,), statistic, vectorized=False, n_resamples=resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
        draws = np.asarray(boot.bootstrap_distribution)  # [statistics, resamples]
        crossings = draws[0][np.isfinite(draws[0])]
        result["crossing_share"] = len(crossings) / draws.shape[1]
        never = math.log10(high) + 1.0  # resamples that never cross, ranked above every crossing
        lower, upper = np.percentile(np.where(np.isfinite(draws[0]), draws[0], never), [2.5, 97.5])
        result["interval"] = (10 ** lower if lower < never else None, 10 ** upper if upper < never else None)
        result["exponents"] = {"reference": tuple(np.percentile(draws[1], [2.5, 97.5])),
                               "objective": tuple(np.percentile(draws[2], [2.5, 97.5]))}
        result["band"] = np.percentile(draws[3:], [2.5, 97.5], axis=1).T.tolist()
    return result


def describe(result: dict, unit: str) -> str:
    """One sentence: where the objective crosses NTP, with its interval, or that it does not."""
    if not result.get("fitted"):
        return f"not fitted: {len(result.get('sizes', []))} sizes with NTP and common seeds (at least {MIN_SIZES})"
    largest = result["largest"]
    at = result["crossover"]
    if at is None:
        share = result.get("crossing_share")
        tail = f" ({share:.0%} of resamples cross somewhere)" if share else ""
        return f"does not cross NTP up to {SEARCH:g}x the largest size measured{tail}"
    way = "better than NTP beyond" if result["better_beyond"] else "worse than NTP beyond"
    interval = result.get("interval")
    bounds = " (one seed: no interval)" if len(result["seeds"]) < 2 else "" if interval is None else \
        " (95% interval [{}, {}])".format(
        "-" if interval[0] is None else f"{interval[0]:.3g}", "no crossing" if interval[1] is None else
        f"{interval[1]:.3g}")
    flag = ""
    if result.get("beyond_limit"):
        flag = f"; **an extrapolation past {EXTRAPOLATION:g}x the largest size ({largest:.3g}): not supported by the data**"
    elif result.get("extrapolated"):
        flag = f"; extrapolated past the largest size ({largest:.3g})"
    return f"crosses NTP at {unit} = {at:.3g}{bounds}: {way}{flag}"
