"""Statistics for paired A/B benchmark rounds (``swiotlb bench ab``).

Why paired rounds: a machine drifts (thermal throttling, page cache, a neighbour on the host) on a
time scale of seconds to minutes, often by more than the effect being measured. Running A and B
back to back in each round and comparing them *within* the round cancels whatever both runs of
the round share. Unpaired tests (t-test, Mann–Whitney on all A against all B) treat the drift as
noise and miss real changes of a few per cent; ``tests/lab/test_abstats.py`` shows it.

The ratio B/A is summarised as the geometric mean of the per-round ratios, that is
``exp(mean(log(b_i / a_i)))``: ratios are multiplicative, so averaging their logarithms makes
"B is twice A" and "B is half A" symmetric, and the mean of the logs is what the bootstrap and the
signed-rank test work on. Its confidence interval is a BCa bootstrap of that mean (the
bias-corrected and accelerated interval adjusts for the skew a small sample of ratios has),
expanded for small samples (:func:`expanded_level`); the
p-value is the Wilcoxon signed-rank test of "the per-round log-ratios are centred on 0", which
needs no normality and is robust to one wild round.

Every random choice (the bootstrap's resampling) comes from the :class:`numpy.random.Generator`
passed in, so an analysis is reproducible from its seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import stats

FloatArray = NDArray[np.float64]

ROBUST_Z_LIMIT = 5.0
"""A round whose modified z-score exceeds this is an outlier. Iglewicz & Hoaglin (1993) suggest
3.5, but with the 10-30 rounds of a benchmark the MAD is itself noisy: on 20 normal rounds 3.5
flagged a clean run one time in ten, 5.0 one time in sixty (and three series are checked: the
ratio and each side), while a stalled round is usually far beyond either."""

_MAD_TO_Z = 0.6745
"""The modified z-score's constant: the 0.75 quantile of the standard normal, so that
``0.6745 * (x - median) / MAD`` is a z-score for normal data."""


@dataclass(frozen=True)
class Thresholds:
    """When a run earns a noise warning, and what effect the rounds-needed estimate is for.

    ``cov``: coefficient of variation of one side above which its measurements are called noisy.
    ``drift``: relative change between the medians of the first and second half of a side above
    which (and significant at ``alpha`` by Mann–Whitney) the machine is said to drift.
    ``effect``: the relative change (0.05 = 5 %) the rounds-needed estimate is for.
    ``alpha``/``power``: the test level and the wanted power of that estimate; ``alpha`` is also
    the level of the confidence interval (1 - alpha).
    """

    cov: float = 0.05
    drift: float = 0.05
    effect: float = 0.05
    alpha: float = 0.05
    power: float = 0.8

    def __post_init__(self) -> None:
        for name in ("cov", "drift", "effect"):
            if not getattr(self, name) > 0:
                raise ValueError(f"threshold {name} must be positive, got {getattr(self, name)!r}")
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ValueError(f"alpha and power must be in (0, 1), got {self.alpha!r} and {self.power!r}")


@dataclass(frozen=True)
class Analysis:
    """The summary of one metric over the paired rounds. ``None`` where it cannot be computed
    (too few rounds, a non-positive value for a ratio); ``warnings`` says why."""

    metric: str
    rounds: int
    median_a: float | None
    median_b: float | None
    cov_a: float | None
    cov_b: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    rounds_needed: int | None
    effect: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The analysis as plain JSON values (floats, ints, None, strings)."""
        return {
            "metric": self.metric,
            "rounds": self.rounds,
            "median_a": self.median_a,
            "median_b": self.median_b,
            "cov_a": self.cov_a,
            "cov_b": self.cov_b,
            "ratio": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_value": self.p_value,
            "rounds_needed": self.rounds_needed,
            "effect": self.effect,
            "warnings": list(self.warnings),
        }


def _array(values: Sequence[float] | FloatArray, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds a value that is not finite: {arr.tolist()}")
    return arr


def log_ratios(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> FloatArray:
    """``log(b_i / a_i)`` per round. Ratios need positive values on both sides."""
    aa, bb = _array(a, "A"), _array(b, "B")
    if aa.shape != bb.shape:
        raise ValueError(f"A and B need one value per round each, got {aa.size} and {bb.size}")
    if np.any(aa <= 0) or np.any(bb <= 0):
        raise ValueError("a ratio B/A needs positive values on both sides")
    return np.log(bb) - np.log(aa)


def geometric_mean_ratio(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> float:
    """The geometric mean of the per-round ratios b_i / a_i."""
    return math.exp(float(np.mean(log_ratios(a, b))))


def coefficient_of_variation(values: Sequence[float] | FloatArray) -> float | None:
    """Sample standard deviation over mean (ddof=1); None for fewer than two values or a zero mean."""
    arr = _array(values, "values")
    if arr.size < 2:
        return None
    mean = float(np.mean(arr))
    if mean == 0:
        return None
    return float(np.std(arr, ddof=1)) / abs(mean)


def expanded_level(confidence: float, n: int) -> float:
    """The bootstrap confidence level that gives ``confidence`` coverage in a small sample.

    A bootstrap interval is too narrow for small n in two ways: the bootstrap distribution's
    spread is the plug-in ``sqrt((n-1)/n)`` times the sample's, and it uses normal rather than
    Student-t tails. Hesterberg's "expanded" interval ("What teachers should know about the
    bootstrap", The American Statistician 69(4), 2015) widens the nominal level so that
    its normal quantile matches the t interval's::

        z' = sqrt(n / (n-1)) * t[1 - (1-confidence)/2, n-1]      level' = 1 - 2 * (1 - Phi(z'))

    At 20 rounds 0.95 becomes 0.968. Measured on normal log-ratios with 20 rounds (1000-3000
    seeded repetitions), plain BCa covered 92-93 % and the expanded BCa 94-95 %
    (``tests/lab/test_abstats.py``); as n grows the two agree.
    """
    if n < 2:
        return confidence
    z = math.sqrt(n / (n - 1)) * float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1))
    return float(1 - 2 * stats.norm.sf(z))


def bca_interval(logr: FloatArray, rng: np.random.Generator, *, confidence: float = 0.95,
                 n_resamples: int = 9999, expand: bool = True) -> tuple[float, float] | None:
    """A BCa bootstrap interval for the geometric-mean ratio, from the per-round log-ratios.

    The bootstrap works on the mean of the log-ratios and the bounds are exponentiated back, so
    the interval is for the same quantity as :func:`geometric_mean_ratio`. With ``expand`` (the
    default) the bootstrap runs at :func:`expanded_level` so that a run of 10-30 rounds gets the
    coverage it asks for; plain BCa undercovers there. Returns None for fewer than two rounds; a
    collapsed interval when every round gave the same ratio (the bootstrap distribution is then a
    single point and BCa's acceleration is undefined).
    """
    logr = _array(logr, "log-ratios")
    if logr.size < 2:
        return None
    if np.ptp(logr) == 0:
        point = math.exp(float(logr[0]))
        return point, point
    level = expanded_level(confidence, int(logr.size)) if expand else confidence
    with warnings.catch_warnings():
        # A small sample whose bootstrap distribution is nearly degenerate makes scipy warn and
        # return NaN; that case is handled below, the warning would only reach the user's terminal.
        warnings.simplefilter("ignore")
        res = stats.bootstrap((logr,), np.mean, n_resamples=n_resamples, confidence_level=level,
                              method="BCa", rng=rng)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return math.exp(low), math.exp(high)


def wilcoxon_p(logr: FloatArray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value for "the log-ratios are centred on zero".

    Rounds with a ratio of exactly 1 carry no sign and are dropped (Wilcoxon's own rule); when
    every round is such a round there is no evidence of a difference and p is 1. None for fewer
    than two rounds.
    """
    logr = _array(logr, "log-ratios")
    if logr.size < 2:
        return None
    if np.all(logr == 0):
        return 1.0
    return float(stats.wilcoxon(logr).pvalue)


def robust_z(values: FloatArray) -> FloatArray:
    """Modified z-scores ``0.6745 (x - median) / MAD`` (Iglewicz & Hoaglin).

    The median and the median absolute deviation are not moved by the outlier being looked for,
    unlike the mean and standard deviation. When more than half the values are equal the MAD is
    zero; the mean absolute deviation (scaled by 1.2533 to estimate the same sigma) stands in, and
    if that is zero too every score is zero.
    """
    x = _array(values, "values")
    med = float(np.median(x))
    dev = np.abs(x - med)
    mad = float(np.median(dev))
    if mad > 0:
        return _MAD_TO_Z * (x - med) / mad
    meanad = float(np.mean(dev))
    if meanad > 0:
        return (x - med) / (1.253314 * meanad)
    return np.zeros_like(x)


def outlier_rounds(values: FloatArray, limit: float = ROBUST_Z_LIMIT) -> list[int]:
    """Indices (0-based) of the values whose modified z-score exceeds ``limit``. Fewer than six
    values give none: the MAD of a handful of values is too rough to call anything an outlier."""
    if len(values) < 6:
        return []
    return [int(i) for i in np.flatnonzero(np.abs(robust_z(values)) > limit)]


def half_drift(values: FloatArray, threshold: float, alpha: float) -> float | None:
    """The relative change of the median from the first to the second half of the rounds, when it
    is both larger than ``threshold`` and significant (two-sided Mann–Whitney at ``alpha``);
    otherwise None.

    Both conditions are needed: a small significant change is not worth a warning, and a large
    change between two halves of a noisy, short run can be chance. With an odd count the middle
    round is left out.
    """
    x = _array(values, "values")
    half = x.size // 2
    if half < 3:
        return None
    first, second = x[:half], x[x.size - half:]
    m1, m2 = float(np.median(first)), float(np.median(second))
    if m1 == 0:
        return None
    change = (m2 - m1) / abs(m1)
    if abs(change) <= threshold:
        return None
    if float(stats.mannwhitneyu(first, second, alternative="two-sided").pvalue) >= alpha:
        return None
    return change


def rounds_needed(logr: FloatArray, effect: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Rounds needed to detect a change of ``effect`` (0.05 = 5 %) at the observed noise.

    Following Kalibera & Jones ("Rigorous benchmarking in reasonable time", ISMM 2013): a short
    dimensioning run estimates the variance of the quantity compared, here the per-round
    log-ratio with sample standard deviation ``s``, and the repetition count is chosen from it.
    For a two-sided paired test at level alpha with power 1 - beta against a true ratio of
    ``1 + effect``, i.e. a shift ``d = ln(1 + effect)`` of the mean log-ratio::

        n = ceil( ((t[1 - alpha/2, n-1] + t[power, n-1]) * s / d) ** 2  *  pi / 3 )

    The t quantiles depend on n, so the formula is iterated from the normal quantiles until it
    is stable. The factor pi/3 is the inverse of the Wilcoxon signed-rank test's asymptotic
    relative efficiency against the t-test for normal data (3/pi = 0.955): the p-value reported
    is Wilcoxon's, so it needs about 5 % more rounds than a t-test. At least 6 rounds are
    returned, the fewest for which a two-sided signed-rank test can reach p < 0.05.
    None when fewer than two rounds give no variance estimate.
    """
    x = _array(logr, "log-ratios")
    if x.size < 2:
        return None
    if not effect > 0:
        raise ValueError(f"effect must be positive, got {effect!r}")
    s = float(np.std(x, ddof=1))
    d = math.log1p(effect)
    if s == 0:
        return 6
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = max(2, math.ceil(((za + zb) * s / d) ** 2 * math.pi / 3))
    for _ in range(100):
        ta, tb = stats.t.ppf(1 - alpha / 2, n - 1), stats.t.ppf(power, n - 1)
        nxt = max(2, math.ceil(((ta + tb) * s / d) ** 2 * math.pi / 3))
        if nxt == n:
            break
        n = nxt
    return max(6, n)


def analyze(metric: str, a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray,
            rng: np.random.Generator, *, thresholds: Thresholds = Thresholds(),
            n_resamples: int = 9999) -> Analysis:
    """Everything ``swiotlb bench ab`` reports for one metric: per-side medians and CoVs, the
    geometric-mean ratio B/A with its BCa interval and Wilcoxon p, the rounds needed for
    ``thresholds.effect``, and the warnings (noise, drift, outlier rounds, too few rounds).

    ``a[i]`` and ``b[i]`` are the two measurements of round i, in round order (the drift check
    compares halves in time).
    """
    aa, bb = _array(a, "A"), _array(b, "B")
    if aa.shape != bb.shape:
        raise ValueError(f"A and B need one value per round each, got {aa.size} and {bb.size}")
    n = int(aa.size)
    notes: list[str] = []
    median_a = float(np.median(aa)) if n else None
    median_b = float(np.median(bb)) if n else None
    cov_a, cov_b = coefficient_of_variation(aa), coefficient_of_variation(bb)
    if n < 2:
        notes.append(f"only {n} round(s): no spread, interval or test")
    elif n < 6:
        notes.append(f"only {n} rounds: a two-sided signed-rank test cannot reach p < 0.05 below 6")
    for side, cov in (("A", cov_a), ("B", cov_b)):
        if cov is not None and cov > thresholds.cov:
            notes.append(f"noisy: CoV of {side} is {cov:.1%}, above {thresholds.cov:.1%}")
    for side, vals in (("A", aa), ("B", bb)):
        change = half_drift(vals, thresholds.drift, thresholds.alpha)
        if change is not None:
            notes.append(f"drift: the median of {side} moved {change:+.1%} from the first half of the "
                         "rounds to the second")
    ratio = ci_low = ci_high = p = None
    needed = None
    if n and (np.any(aa <= 0) or np.any(bb <= 0)):
        notes.append("no ratio: B/A needs positive values on both sides")
    elif n:
        logr = log_ratios(aa, bb)
        ratio = math.exp(float(np.mean(logr)))
        ci = bca_interval(logr, rng, confidence=1 - thresholds.alpha, n_resamples=n_resamples)
        if ci is not None:
            ci_low, ci_high = ci
        p = wilcoxon_p(logr)
        needed = rounds_needed(logr, thresholds.effect, alpha=thresholds.alpha, power=thresholds.power)
        bad = outlier_rounds(logr)
        if bad:
            notes.append("outlier round(s) in the ratio B/A: " + ", ".join(str(i + 1) for i in bad))
        if needed is not None and needed > n:
            notes.append(f"underpowered: {needed} rounds needed to detect a {thresholds.effect:.0%} "
                         f"change at this noise, {n} measured")
    for side, vals in (("A", aa), ("B", bb)):
        if np.all(vals > 0):
            bad = outlier_rounds(np.log(vals))
            if bad:
                notes.append(f"outlier round(s) on {side}: " + ", ".join(str(i + 1) for i in bad))
    return Analysis(metric=metric, rounds=n, median_a=median_a, median_b=median_b, cov_a=cov_a, cov_b=cov_b,
                    ratio=ratio, ci_low=ci_low, ci_high=ci_high, p_value=p, rounds_needed=needed,
                    effect=thresholds.effect, warnings=notes)
