"""Resampling inference. Samples from the same sentences are correlated, so uncertainty
comes from resampling whole clusters (sentences or pairs), never individual values."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.stats.errors import InsufficientDataError


@dataclass(frozen=True)
class BootstrapResult:
    statistic: float
    confidence_interval: tuple[float, float]
    pvalue: float  # one-sided, H0: statistic <= null_value (percentile-bootstrap test)
    n_clusters: int
    n_resamples: int


def cluster_bootstrap_share(
    hits: np.ndarray,
    clusters: np.ndarray,
    null_value: float = 0.5,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Share of True in ``hits`` with a CI from resampling clusters with replacement.

    The p-value inverts the percentile interval: the share of resampled statistics at or
    below ``null_value``, so "lower CI bound > null" and "p < (1 - confidence)/2" agree.
    """
    hits = np.asarray(hits, dtype=bool)
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    if len(labels) < 2:
        raise InsufficientDataError("a cluster bootstrap needs at least two clusters")
    k = np.bincount(index, weights=hits, minlength=len(labels))
    n = np.bincount(index, minlength=len(labels)).astype(float)
    rng = np.random.default_rng(seed)
    # Multinomial counts = how often each cluster is drawn in each resample.
    draws = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=n_resamples)
    shares = (draws @ k) / (draws @ n)
    alpha = 1 - confidence
    lo, hi = np.quantile(shares, [alpha / 2, 1 - alpha / 2])
    pvalue = (1 + np.sum(shares <= null_value)) / (n_resamples + 1)
    return BootstrapResult(
        statistic=float(k.sum() / n.sum()),
        confidence_interval=(float(lo), float(hi)),
        pvalue=float(pvalue),
        n_clusters=len(labels),
        n_resamples=n_resamples,
    )


@dataclass(frozen=True)
class MeanBootstrap:
    """Mean of one statistic per independent unit (e.g. a per-pair slope), with a
    percentile-bootstrap CI from resampling the units."""

    statistic: float
    confidence_interval: tuple[float, float]
    p_less: float  # one-sided, H0: mean >= null_value
    p_greater: float  # one-sided, H0: mean <= null_value
    n_units: int
    n_resamples: int


def bootstrap_mean(
    values: np.ndarray,
    null_value: float = 0.0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MeanBootstrap:
    """Mean of ``values`` (one per unit) with a CI from resampling units with replacement.

    Each unit's statistic already summarizes all of that unit's correlated samples (e.g. a
    pair's slope over layers), so resampling the values is the cluster bootstrap. The
    resamples depend only on ``seed`` and the number of units: statistics of the same units
    bootstrapped with one seed (a left slope, a right slope, their difference) share their
    draws, as one joint resampling would.

    The interval is the expanded percentile interval (Hesterberg 2015): the plain
    percentile interval of a mean is too narrow for few units (it uses the 1/n variance and
    normal, not t, quantiles; ~91 % coverage for a nominal 95 % at 12 units), so its tail
    levels are set to Phi(sqrt(n / (n - 1)) t_{n-1}(alpha / 2)); with many units this is the
    plain percentile interval. The p-values invert that interval, so "upper bound < null"
    and "p_less < (1 - confidence) / 2" agree.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise InsufficientDataError(f"a bootstrap needs at least two finite values, got {x.size}")
    n = x.size
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    widen = float(np.sqrt(n / (n - 1)))
    tail = float(stats.norm.cdf(widen * stats.t.ppf((1 - confidence) / 2, n - 1)))
    lo, hi = np.quantile(means, [tail, 1 - tail])

    def expanded(share: float) -> float:
        # A raw bootstrap tail share mapped through the same expansion as the interval.
        return float(stats.t.cdf(stats.norm.ppf(share) / widen, n - 1))

    return MeanBootstrap(
        statistic=float(x.mean()),
        confidence_interval=(float(lo), float(hi)),
        p_less=expanded((1 + np.sum(means >= null_value)) / (n_resamples + 1)),
        p_greater=expanded((1 + np.sum(means <= null_value)) / (n_resamples + 1)),
        n_units=n,
        n_resamples=n_resamples,
    )


def cluster_slopes(
    x: np.ndarray, y: np.ndarray, clusters: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """OLS slope of ``y`` on ``x`` within each cluster: (sorted cluster labels, slopes).

    A slope is NaN where the cluster's ``x`` does not vary (no trend can be measured).
    One slope per cluster turns a trend over correlated samples (one pair's layers) into
    one independent value per unit, for ``bootstrap_mean``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    labels, index = np.unique(np.asarray(clusters).ravel(), return_inverse=True)
    if not (x.size == y.size == index.size):
        raise ValueError(f"x, y and clusters differ in length: {x.size}, {y.size}, {index.size}")
    count = np.bincount(index, minlength=len(labels)).astype(float)
    mean_x = np.bincount(index, weights=x, minlength=len(labels)) / count
    mean_y = np.bincount(index, weights=y, minlength=len(labels)) / count
    dx = x - mean_x[index]
    sxx = np.bincount(index, weights=dx * dx, minlength=len(labels))
    sxy = np.bincount(index, weights=dx * (y - mean_y[index]), minlength=len(labels))
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = np.where(sxx > 1e-12 * np.maximum(1.0, count), sxy / sxx, np.nan)
    return labels, slopes


# ------------------------------------------------------- two-way (crossed) bootstrap
#
# The 10 subjects x 12 attributes of the data are crossed: two pairs that share a subject
# (or an attribute) share its random effect, so the 120 pairs are not independent and a
# one-way bootstrap over pairs under-covers. The pigeonhole bootstrap (Owen 2007, Ann. Appl.
# Stat. 1(2)) resamples both factors at once: subjects with replacement (counts c_s) and,
# independently, attributes with replacement (counts c_a); a unit in cell (s, a) gets the
# weight c_s * c_a, and a weighted mean or ratio is recomputed with these weights.


def _factor_codes(labels: Iterable[Hashable], what: str) -> tuple[np.ndarray, int]:
    """Integer codes of ``labels`` (one per unit) over their sorted distinct values.

    The levels are sorted, not taken in order of appearance, so a unit's weight does not
    depend on the order in which units are listed. Labels that do not sort together (mixed
    types) are ordered by ``repr``.
    """
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"{what} labels must be one-dimensional, got shape {labels.shape}")
        seq = labels.tolist()
    else:
        seq = list(labels)
    try:
        levels = sorted(set(seq))
    except TypeError:
        levels = sorted(set(seq), key=repr)
    lookup = {level: i for i, level in enumerate(levels)}
    return np.fromiter((lookup[v] for v in seq), dtype=np.intp, count=len(seq)), len(levels)


def _crossed_design(
    subjects: Iterable[Hashable], attributes: Iterable[Hashable]
) -> tuple[np.ndarray, np.ndarray, int, int]:
    s_idx, n_s = _factor_codes(subjects, "subject")
    a_idx, n_a = _factor_codes(attributes, "attribute")
    if s_idx.size != a_idx.size:
        raise ValueError(f"{s_idx.size} subject labels but {a_idx.size} attribute labels")
    if n_s < 2 or n_a < 2:
        # The data cannot decide (a claim reads INCONCLUSIVE), not a caller's mistake.
        raise InsufficientDataError(
            "a crossed (subject x attribute) bootstrap needs at least 2 distinct subjects and "
            f"2 distinct attributes, got {n_s} subject(s) and {n_a} attribute(s)"
        )
    return s_idx, a_idx, n_s, n_a


def _crossed_counts(
    n_subjects: int, n_attributes: int, n_resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial draw counts of subjects (n_resamples, n_subjects) and attributes
    (n_resamples, n_attributes), from one generator so that every function given the same
    seed and design uses the same resamples (statistics of one data set share their draws,
    as one joint resampling would)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    c_s = rng.multinomial(n_subjects, np.full(n_subjects, 1 / n_subjects), size=n_resamples)
    c_a = rng.multinomial(n_attributes, np.full(n_attributes, 1 / n_attributes), size=n_resamples)
    return c_s.astype(np.float64), c_a.astype(np.float64)


def crossed_weights(
    subjects: Iterable[Hashable], attributes: Iterable[Hashable], n_resamples: int, seed: int
) -> np.ndarray:
    """(n_resamples, n_units) pigeonhole-bootstrap weights c_s * c_a of each unit.

    Units are given by their subject and attribute labels (one entry each per unit; any
    hashable labels). Units in the same cell (e.g. one pair at several layers) get the same
    weight, as they are drawn together. A statistic that is a weighted mean, or a ratio of
    weighted sums, of per-unit values is recomputed once per row. Deterministic given
    ``seed``; the same draws as ``crossed_bootstrap_share``/``crossed_bootstrap_mean`` use
    with that seed.
    """
    s_idx, a_idx, n_s, n_a = _crossed_design(subjects, attributes)
    c_s, c_a = _crossed_counts(n_s, n_a, n_resamples, seed)
    return c_s[:, s_idx] * c_a[:, a_idx]


def _crossed_ratio_draws(
    numerator: np.ndarray,
    denominator: np.ndarray,
    s_idx: np.ndarray,
    a_idx: np.ndarray,
    n_s: int,
    n_a: int,
    n_resamples: int,
    seed: int,
) -> np.ndarray:
    """Resampled sum(w * numerator) / sum(w * denominator) for the crossed weights w.

    Sums are taken per cell first, so the cost is (resamples x subjects x attributes) and no
    (resamples x units) weight matrix is built. Resamples whose weighted denominator is zero
    (possible only when cells are missing from the design) are dropped.
    """
    cell = s_idx * n_a + a_idx
    num = np.bincount(cell, weights=numerator, minlength=n_s * n_a).reshape(n_s, n_a)
    den = np.bincount(cell, weights=denominator, minlength=n_s * n_a).reshape(n_s, n_a)
    c_s, c_a = _crossed_counts(n_s, n_a, n_resamples, seed)
    top = np.einsum("bs,sa,ba->b", c_s, num, c_a)
    bottom = np.einsum("bs,sa,ba->b", c_s, den, c_a)
    keep = bottom > 0
    if not np.any(keep):
        raise InsufficientDataError("no resample has a positive total weight")
    return top[keep] / bottom[keep]


def _expanded_interval(
    draws: np.ndarray, null_value: float, confidence: float, n_clusters: int
) -> tuple[tuple[float, float], float, float]:
    """Expanded percentile interval of ``draws`` and the one-sided p-values that invert it.

    The tails are widened as in ``bootstrap_mean`` (Hesterberg 2015) with ``n_clusters``
    units: tail level Phi(sqrt(n / (n - 1)) t_{n-1}(alpha / 2)). The bounds are order
    statistics chosen so that inversion is exact: with m = #(draws <= null), p_greater =
    T((1 + m) / (B + 1)) with T the same expansion, and the lower bound is the K-th smallest
    draw where K is the least m with p_greater >= alpha / 2. Hence "lower bound > null" iff
    "p_greater < alpha / 2" with no interpolation gap (likewise for the upper side).

    Returns ((lo, hi), p_greater, p_less): p_greater tests H0: statistic <= null.
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.sort(np.asarray(draws, dtype=np.float64))
    b = x.size
    alpha = 1 - confidence
    widen = float(np.sqrt(n_clusters / (n_clusters - 1)))
    df = n_clusters - 1

    def expanded(share: float) -> float:
        return float(stats.t.cdf(stats.norm.ppf(share) / widen, df))

    # Least count m with expanded((1 + m) / (b + 1)) >= alpha / 2, i.e.
    # (1 + m) / (b + 1) >= tail; a tiny slack absorbs rounding in tail * (b + 1).
    tail = float(stats.norm.cdf(widen * stats.t.ppf(alpha / 2, df)))
    k = int(np.ceil(tail * (b + 1) - 1 - 1e-9))
    while k > 0 and expanded(k / (b + 1)) >= alpha / 2:  # guard against rounding
        k -= 1
    while expanded((1 + k) / (b + 1)) < alpha / 2:
        k += 1
    p_greater = expanded((1 + np.sum(x <= null_value)) / (b + 1))
    p_less = expanded((1 + np.sum(x >= null_value)) / (b + 1))
    if k < 1:
        # So few subjects or attributes (n - 1 degrees of freedom) that not even a resample
        # set with no draw beyond the null could reject: the design cannot bound the
        # statistic, and the interval is unbounded (the p-values, >= alpha / 2, agree).
        return (-math.inf, math.inf), p_greater, p_less
    k = min(k, b)
    lo, hi = x[k - 1], x[b - k]
    return (float(lo), float(hi)), p_greater, p_less


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial interval for k successes in n trials.

    Guaranteed coverage at every true share, and a proper interval at k = 0 ([0, u] with
    u = 1 - (alpha / 2)^(1/n)) and k = n, where a bootstrap has no spread at all.
    """
    from scipy import stats

    if not (isinstance(k, int | np.integer) and isinstance(n, int | np.integer)):
        raise TypeError(f"k and n must be integers, got {k!r} and {n!r}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class CrossedShare:
    """Share of hits over crossed (subject x attribute) units, with a two-way interval."""

    statistic: float
    confidence_interval: tuple[float, float]
    pvalue_greater: float  # one-sided, H0: share <= null_value (small when share > null)
    pvalue_less: float  # one-sided, H0: share >= null_value (small when share < null)
    n_units: int
    n_subjects: int
    n_attributes: int
    n_resamples: int
    method: str  # "crossed percentile" (pigeonhole bootstrap) or "exact" (Clopper-Pearson)


def crossed_bootstrap_share(
    hits: np.ndarray,
    subjects: Iterable[Hashable],
    attributes: Iterable[Hashable],
    null_value: float = 0.5,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CrossedShare:
    """Share of True in ``hits`` with a pigeonhole (subject x attribute) bootstrap interval.

    One hit per unit; units are (layer, pair) or pairs, labelled by subject and attribute.
    The share is sum(w * hits) / sum(w) with the crossed weights w = c_s * c_a, so pairs
    that share a subject or an attribute move together, as their random effects do.

    With only 10 subjects the plain percentile interval is too narrow (the few-cluster
    problem ``bootstrap_mean`` documents), so the tails are expanded as there with
    n = min(n_subjects, n_attributes), the factor that limits the information. Measured
    coverage of a nominal 95 % (10 x 12 cells x 3 layers, logit = 0.5 + u_s + v_a + e_sa with
    sd 1, 1, 0.5; 500 reps, 1000 resamples; tests/test_crossed_bootstrap.py): plain
    percentile 0.956 (0.918 with a dominant subject effect, sd 2, 0.5, 0.5), expanded 0.980
    (0.960): conservative, as the pigeonhole bootstrap counts within-cell noise more than
    once; the one-way bootstrap over the 120 pairs covers 0.59. The p-values invert the
    same interval exactly (see ``_expanded_interval``).

    When every hit is equal (share 0 or 1) every resample gives the same share and a
    percentile interval collapses to a point, so the exact Clopper-Pearson interval and
    binomial test are used instead (method "exact"), with n = the number of distinct
    (subject, attribute) cells, not of units: the units of one cell (one pair at several
    layers) are not independent, and the cell count is the conservative unit count that is
    always available.
    """
    from scipy import stats

    h = np.asarray(hits, dtype=bool).ravel()
    s_idx, a_idx, n_s, n_a = _crossed_design(subjects, attributes)
    if h.size != s_idx.size:
        raise ValueError(f"{h.size} hits but {s_idx.size} subject/attribute labels")
    share = float(h.mean())
    if h.all() or not h.any():
        n_cells = int(np.unique(s_idx * n_a + a_idx).size)
        k = n_cells if h.all() else 0
        lo, hi = clopper_pearson(k, n_cells, confidence)
        return CrossedShare(
            statistic=share,
            confidence_interval=(lo, hi),
            pvalue_greater=float(stats.binomtest(k, n_cells, null_value, "greater").pvalue),
            pvalue_less=float(stats.binomtest(k, n_cells, null_value, "less").pvalue),
            n_units=int(h.size),
            n_subjects=n_s,
            n_attributes=n_a,
            n_resamples=0,
            method="exact",
        )
    draws = _crossed_ratio_draws(
        h.astype(np.float64), np.ones(h.size), s_idx, a_idx, n_s, n_a, n_resamples, seed
    )
    (lo, hi), p_greater, p_less = _expanded_interval(draws, null_value, confidence, min(n_s, n_a))
    ci = (max(lo, 0.0), min(hi, 1.0))  # a share's unbounded interval is [0, 1]
    return CrossedShare(
        statistic=share,
        confidence_interval=ci,
        pvalue_greater=p_greater,
        pvalue_less=p_less,
        n_units=int(h.size),
        n_subjects=n_s,
        n_attributes=n_a,
        n_resamples=int(draws.size),
        method="crossed percentile",
    )


@dataclass(frozen=True)
class CrossedMean:
    """Mean of one value per crossed (subject x attribute) unit, with a two-way interval."""

    statistic: float
    confidence_interval: tuple[float, float]
    p_less: float  # one-sided, H0: mean >= null_value
    p_greater: float  # one-sided, H0: mean <= null_value
    n_units: int
    n_subjects: int
    n_attributes: int
    n_resamples: int


def crossed_bootstrap_mean(
    values: np.ndarray,
    subjects: Iterable[Hashable],
    attributes: Iterable[Hashable],
    null_value: float = 0.0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CrossedMean:
    """Mean of ``values`` (one per unit, e.g. a slope per pair) with a pigeonhole interval.

    The resampled statistic is sum(w * values) / sum(w) with the crossed weights
    w = c_s * c_a. The tails are expanded as in ``bootstrap_mean`` with
    n = min(n_subjects, n_attributes): the plain percentile interval uses normal quantiles
    and the (n - 1)/n bootstrap variance of ~10 clusters. Measured coverage of a nominal
    95 % (10 x 12 pairs, value mu + u_s + v_a + e_sa with sd 1, 1, 0.5; 500 reps, 1000
    resamples; tests/test_crossed_bootstrap.py): plain percentile 0.938 (0.914 with other
    seeds), expanded 0.970; with a dominant subject effect (sd 2, 0.5, 0.5) plain 0.918,
    expanded 0.952. The one-way ``bootstrap_mean`` over the 120 pairs covers 0.44 (0.41).
    The p-values invert the same interval exactly, so "upper bound < null" and
    "p_less < (1 - confidence) / 2" agree.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite (drop units without a value first)")
    return crossed_bootstrap_ratio(
        x, np.ones(x.size), subjects, attributes, null_value, n_resamples, confidence, seed
    )


def crossed_bootstrap_ratio(
    numerator: np.ndarray,
    denominator: np.ndarray,
    subjects: Iterable[Hashable],
    attributes: Iterable[Hashable],
    null_value: float = 1.0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CrossedMean:
    """sum(numerator) / sum(denominator) over crossed units (e.g. each cell's late and early
    mean |D|: the ratio of two means), with the pigeonhole interval of
    ``crossed_bootstrap_mean`` (expanded tails, p-values that invert it exactly)."""
    num = np.asarray(numerator, dtype=np.float64).ravel()
    den = np.asarray(denominator, dtype=np.float64).ravel()
    s_idx, a_idx, n_s, n_a = _crossed_design(subjects, attributes)
    if not num.size == den.size == s_idx.size:
        raise ValueError(f"{num.size} values but {s_idx.size} subject/attribute labels")
    if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den))):
        raise ValueError("numerators and denominators must be finite")
    if not den.sum() > 0:
        raise InsufficientDataError("the denominator's total is not positive")
    draws = _crossed_ratio_draws(num, den, s_idx, a_idx, n_s, n_a, n_resamples, seed)
    ci, p_greater, p_less = _expanded_interval(draws, null_value, confidence, min(n_s, n_a))
    return CrossedMean(
        statistic=float(num.sum() / den.sum()),
        confidence_interval=ci,
        p_less=p_less,
        p_greater=p_greater,
        n_units=int(num.size),
        n_subjects=n_s,
        n_attributes=n_a,
        n_resamples=int(draws.size),
    )


# ----------------------------------------------------------- stratified randomization


@dataclass(frozen=True)
class RelabelTest:
    """One-sided p-values of a randomization test, both directions."""

    p_greater: float  # for the statistic > its null
    p_less: float  # for the statistic < its null
    smallest_p: float  # the least p any data could give: 1 / number of relabelings
    exact: bool  # every relabeling enumerated, or a seeded Monte Carlo sample of them


def randomization_pvalues(
    observed: float, null: np.ndarray, exact: bool, smallest_p: float
) -> RelabelTest:
    """p-values of ``observed`` against the statistic's values under the relabelings
    (``null``: all of them when ``exact``, else a Monte Carlo sample). Ties (e.g. all scores
    0) count as at least as extreme: they give p = 1, not 0. A Monte Carlo p counts the
    observed labelling once more, so that it is never 0."""
    tol = 1e-12 * max(1.0, abs(observed))
    extra = 0 if exact else 1
    ge, le = np.sum(null >= observed - tol), np.sum(null <= observed + tol)
    return RelabelTest(
        p_greater=float((ge + extra) / (null.size + extra)),
        p_less=float((le + extra) / (null.size + extra)),
        smallest_p=smallest_p,
        exact=exact,
    )


def relabel_pvalues(
    strata: Sequence[np.ndarray], seed: int = 0, max_exact: int = 1 << 20, draws: int = 20_000
) -> RelabelTest:
    """Stratified randomization test of one labelled unit against the rest of its stratum.

    ``strata``: per stratum (a subject), one score per unit (an attribute), the labelled
    unit first. The statistic is the mean over strata of the labelled unit's score minus the
    mean of the others'; under the null the label is exchangeable within each stratum, so
    its null distribution lets each unit of each stratum in turn carry it (all relabelings,
    or ``draws`` seeded ones when there are more than ``max_exact``). Exact whatever the
    scores' shape, where a signed-rank or t test on the differences assumes them symmetric.
    """
    rows = []
    for scores in strata:
        v = np.asarray(scores, dtype=np.float64)
        rows.append(v - (v.sum() - v) / (len(v) - 1))  # the difference if each unit were labelled
    observed = float(np.mean([r[0] for r in rows]))
    total = math.prod(len(r) for r in rows)
    exact = total <= max_exact
    if exact:
        sums = np.zeros(1)
        for r in rows:
            sums = (sums[:, None] + r[None, :]).ravel()
        null = sums / len(rows)
    else:
        rng = np.random.default_rng(seed)
        null = np.mean([r[rng.integers(0, len(r), draws)] for r in rows], axis=0)
    return randomization_pvalues(observed, null, exact, smallest_p=1 / total)
