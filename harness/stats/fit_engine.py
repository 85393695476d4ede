"""The fast maximum-likelihood engine behind ``distributions.rank``.

The sample is sorted once and compressed into about a thousand narrow bins (uniform over
+-5 robust sd, 1 % geometric steps in the tails), each keeping its count, mean and spread.
Closed-form maximum likelihood where it exists (norm, laplace, laplace_asymmetric exactly;
vonmises as scipy's own fit defines it). Every other family is fitted by a damped Newton
method on a few hundred weighted nodes (two per merged bin, at mean +- sd, so the
objective is exact to fourth order in the bin width; the outermost bins' raw values added
so supports must hold the true extremes), with numpy log-densities and derivatives from
one batched finite-difference stencil per step. Starts are quantile-matched candidates
over a grid of shapes; the best is run to convergence and the next ones probed, on rough
nodes (ROUGH_MERGE bins per node pair) at a quarter of the cost, and the optimum found
there is then settled on the search nodes. Parametrizations keep the search well posed
(see ``distributions``'s docstring).

``fit_batch`` fits one family to many samples at once (``newton``): one objective call
per Newton step for all of them, since numpy's per-call overhead, not arithmetic,
dominates on a few hundred nodes. Every sample follows its own path, and its node sums
ignore the padding its batch adds, so a sample's fit is bit for bit the one it gets alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
from scipy import special as sc
from scipy import stats
from scipy.optimize import brentq

from harness.stats.errors import InsufficientDataError
from harness.stats.families import EXTRA_FAMILIES, STUDY_FAMILIES
from harness.stats.newton import (
    MAX_NEWTON_STEPS,
    SUM_BLOCK,
    Objective,
    Optimum,
    multistart,
    newton,
    node_sum,
)

FAMILIES: dict[str, stats.rv_continuous] = {
    name: getattr(stats, name) for name in STUDY_FAMILIES + EXTRA_FAMILIES
}
SSE_BINS = 150  # the study's histogram SSE
# Bumped whenever fitting changes its numbers, so cached fits are recomputed.
ENGINE_VERSION = 5
# What a calibration scenario ranking this engine's fits rests on (Scenario.code): a new
# engine then reruns those reps instead of keeping the ones the old engine decided.
CALIBRATION_CODE = {"fit_engine": ENGINE_VERSION}
MIN_VALUES = 100
# Bins of the engine's compressed sample: uniform over +-CORE_WIDTH robust standard
# deviations around the median, geometric steps of TAIL_GROWTH beyond.
CORE_BINS = 1024
CORE_WIDTH = 5.0
TAIL_GROWTH = 0.01
SEARCH_MERGE = 8  # fine bins per node pair of the optimizer's objective
CUSP_MERGE = 4  # ... for a family with a cusp (gennorm), searched on these throughout
# ... and of the first stage's, which finds the optimum's basin at a quarter of the cost
# before the search nodes settle it
ROUGH_MERGE = 16


class DegenerateSampleError(InsufficientDataError):
    """The sample has (almost) no spread, so no continuous family can be fitted to it."""


def deterministic_subsample(x: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    if size <= 0 or len(x) <= size:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), size=size, replace=False))]


def sample_sum(fn: Callable[[np.ndarray], np.ndarray], s: Compressed, exact: np.ndarray) -> float:
    """Sum of ``fn`` (x units) over the whole sample: two nodes per bin at mean +- sd match
    the bin's first two moments, so the rule is exact for quadratics within a bin; the
    ``exact`` bins (where ``fn`` has a kink or varies fast) are summed over raw values."""
    rest = np.ones(len(s.y), dtype=bool)
    rest[exact] = False
    y, spread, count = s.y[rest], s.spread[rest], s.count[rest]
    nodes = s.to_x(np.concatenate([y - spread, y + spread]))
    total = 0.5 * float(_wsum(fn(nodes), np.concatenate([count, count])))
    if len(exact):
        total += float(fn(s.raw(np.asarray(exact))).sum())
    return total


# --------------------------------------------------------------------------------------
# Input checks and the compressed sample


def validated(x: np.ndarray) -> np.ndarray:
    """The sample as a flat float64 array, or a ValueError saying what is wrong with it."""
    x = np.asarray(x, dtype=np.float64).ravel()
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"sample has {bad} NaN/inf values out of {len(x)}")
    if len(x) < MIN_VALUES:
        raise InsufficientDataError(
            f"sample has {len(x)} values; at least {MIN_VALUES} are needed to fit"
        )
    return x


def _quantile(xs: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    pos = q * (len(xs) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(xs) - 1)
    return float(xs[i] + (pos - i) * (xs[j] - xs[i]))


def _degenerate_reason(xs: np.ndarray) -> str:
    lo, hi = float(xs[0]), float(xs[-1])
    magnitude = max(abs(lo), abs(hi))
    if hi - lo <= 1e-10 * magnitude or hi == lo:
        return f"sample is constant or nearly so (all {len(xs)} values within [{lo:.6g}, {hi:.6g}])"
    if _quantile(xs, 0.75) == _quantile(xs, 0.25):
        return (
            f"sample is degenerate: at least half of its {len(xs)} values equal "
            f"{_quantile(xs, 0.5):.6g} (interquartile range 0), so no continuous density fits"
        )
    return ""


def _bin_edges(ylo: float, yhi: float) -> np.ndarray:
    """Uniform in the core, geometric in the tails; outer edges open so all values land."""
    core = np.linspace(-CORE_WIDTH, CORE_WIDTH, CORE_BINS + 1)
    step = math.log1p(TAIL_GROWTH)
    right = left = np.empty(0)
    if yhi > CORE_WIDTH:
        k = math.ceil(math.log(yhi / CORE_WIDTH) / step)
        right = CORE_WIDTH * np.exp(step * np.arange(1, k + 1))
    if ylo < -CORE_WIDTH:
        k = math.ceil(math.log(-ylo / CORE_WIDTH) / step)
        left = -CORE_WIDTH * np.exp(step * np.arange(k, 0, -1))
    edges = np.concatenate([left, core, right])
    edges = edges[(edges > ylo) & (edges < yhi)]
    return np.concatenate([[-np.inf], edges, [np.inf]])


@dataclass(frozen=True)
class Compressed:
    """A sample reduced to what the engine needs; ``y = (x - center) / width``.

    Bins keep count, mean and within-bin standard deviation, so sums of a smooth function
    over the sample are exact for quadratics within each bin (two-point rule); the sorted
    values stay at hand for the few bins where a function is not smooth.
    """

    n: int
    lo: float
    hi: float
    center: float  # the median
    width: float  # a robust standard deviation (interquartile range / 1.349)
    y: np.ndarray  # bin means (y units), non-empty bins only
    count: np.ndarray
    spread: np.ndarray  # within-bin standard deviation (y units)
    starts: np.ndarray  # each bin's first index into sorted_x
    edges: np.ndarray  # finite bin edges (x units), a data-adaptive grid for integration
    q25: float  # quartiles in y units (the median is 0)
    q75: float
    sorted_x: np.ndarray
    sse_centers: np.ndarray
    sse_heights: np.ndarray
    nodes: np.ndarray  # the search's quadrature: two nodes per coarse bin (y units)
    weights: np.ndarray  # their weights (summing to n)
    rough_nodes: np.ndarray  # the same with ROUGH_MERGE bins per node pair
    rough_weights: np.ndarray
    cusp_nodes: np.ndarray  # ... and with CUSP_MERGE
    cusp_weights: np.ndarray

    @property
    def ylo(self) -> float:
        return (self.lo - self.center) / self.width

    @property
    def yhi(self) -> float:
        return (self.hi - self.center) / self.width

    @overload
    def to_x(self, y: np.ndarray) -> np.ndarray: ...
    @overload
    def to_x(self, y: float) -> float: ...
    def to_x(self, y: np.ndarray | float) -> np.ndarray | float:
        return self.center + self.width * y

    def bin_of(self, x_value: float) -> int:
        """Index of the non-empty bin holding (or nearest below) a value."""
        pos = int(np.searchsorted(self.sorted_x, x_value, side="right")) - 1
        return max(int(np.searchsorted(self.starts, max(pos, 0), side="right")) - 1, 0)

    def raw(self, bins: np.ndarray) -> np.ndarray:
        """The sample's values (x units) in the given bins."""
        ends = self.starts[bins] + self.count[bins].astype(np.intp)
        return np.concatenate(
            [self.sorted_x[i:j] for i, j in zip(self.starts[bins], ends, strict=True)]
        )


def compress(x: np.ndarray) -> Compressed:
    """Sort once and bin; raises ValueError / DegenerateSampleError for unusable samples."""
    xs = np.sort(validated(x))
    reason = _degenerate_reason(xs)
    if reason:
        raise DegenerateSampleError(reason)
    n = len(xs)
    center = _quantile(xs, 0.5)
    iqr = _quantile(xs, 0.75) - _quantile(xs, 0.25)
    width = iqr / 1.3489795003921634  # a normal sample's standard deviation
    ys = (xs - center) / width
    edges = _bin_edges(float(ys[0]), float(ys[-1]))
    bounds = np.searchsorted(ys, edges, side="left")
    counts = np.diff(bounds)
    starts = bounds[:-1][counts > 0]
    count = counts[counts > 0].astype(np.float64)
    # Bins are narrow and y is centred, so raw power sums lose at most ~1e-9 of a variance.
    mean = np.add.reduceat(ys, starts) / count
    var = np.add.reduceat(ys * ys, starts) / count - mean * mean
    inner = slice(1, -1)  # the outermost bins stay raw: see _search_nodes
    extremes = np.concatenate([ys[: starts[1]], ys[starts[-1] :]])
    quadratures = []
    for merge in (SEARCH_MERGE, ROUGH_MERGE, CUSP_MERGE):
        group = np.flatnonzero(counts) // merge
        nodes, weights = _search_nodes(group[inner], count[inner], mean[inner], var[inner])
        quadratures.append(
            (np.concatenate([nodes, extremes]), np.concatenate([weights, np.ones(len(extremes))]))
        )
    (nodes, weights), (rough_nodes, rough_weights), (cusp_nodes, cusp_weights) = quadratures
    sse_edges = np.linspace(xs[0], xs[-1], SSE_BINS + 1)
    sse_bounds = np.searchsorted(xs, sse_edges[1:-1], side="left")
    sse_counts = np.diff(np.concatenate([[0], sse_bounds, [n]]))
    return Compressed(
        n=n,
        lo=float(xs[0]),
        hi=float(xs[-1]),
        center=center,
        width=width,
        y=mean,
        count=count,
        spread=np.sqrt(np.maximum(var, 0.0)),
        starts=starts,
        edges=center + width * edges[1:-1],
        q25=(_quantile(xs, 0.25) - center) / width,
        q75=(_quantile(xs, 0.75) - center) / width,
        sorted_x=xs,
        sse_centers=0.5 * (sse_edges[:-1] + sse_edges[1:]),
        sse_heights=sse_counts / (n * np.diff(sse_edges)),
        nodes=nodes,
        weights=weights,
        rough_nodes=rough_nodes,
        rough_weights=rough_weights,
        cusp_nodes=cusp_nodes,
        cusp_weights=cusp_weights,
    )


def _search_nodes(
    group: np.ndarray, count: np.ndarray, mean: np.ndarray, var: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge runs of SEARCH_MERGE adjacent bins and place two nodes at each merged bin's
    mean +- sd. The optimizer's error is then fourth order in the bin width, so a few
    hundred nodes place the optimum as well as the full sample does. (The caller adds
    the raw values of the outermost bins: a support edge or a steep tail must see the
    true extremes, or a fit can end with data outside its support.)"""
    if len(group) == 0:
        return np.empty(0), np.empty(0)
    first = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    total = np.add.reduceat(count, first)
    centre = np.add.reduceat(count * mean, first) / total
    second = np.add.reduceat(count * (mean * mean + var), first) / total
    sd = np.sqrt(np.maximum(second - centre * centre, 0.0))
    return np.concatenate([centre - sd, centre + sd]), 0.5 * np.concatenate([total, total])


# --------------------------------------------------------------------------------------
# Standardized log-densities in numpy (scipy's parametrizations; shapes broadcast with z)

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_EULER = 0.5772156649015329


def _lp_norm(z: np.ndarray) -> np.ndarray:
    return -0.5 * z * z - _LOG_SQRT_2PI


def _lp_logistic(z: np.ndarray) -> np.ndarray:
    a = np.abs(z)
    return -a - 2.0 * np.log1p(np.exp(-a))


def _lp_hypsecant(z: np.ndarray) -> np.ndarray:
    a = np.abs(z)
    return math.log(2 / math.pi) - a - np.log1p(np.exp(-2.0 * a))


def _lp_laplace(z: np.ndarray) -> np.ndarray:
    return -math.log(2) - np.abs(z)


def _lp_gennorm(z: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return np.log(0.5 * beta) - sc.gammaln(1.0 / beta) - np.abs(z) ** beta


def _lp_t(z: np.ndarray, df: np.ndarray) -> np.ndarray:
    const = sc.gammaln(0.5 * (df + 1)) - sc.gammaln(0.5 * df) - 0.5 * np.log(df * math.pi)
    return const - 0.5 * (df + 1) * np.log1p(z * z / df)


def _lp_genlogistic(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.log(c) - z - (c + 1) * np.logaddexp(0.0, -z)


def _lp_skewnorm(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return math.log(2) + _lp_norm(z) + sc.log_ndtr(a * z)


def _lp_powernorm(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.log(c) + _lp_norm(z) + (c - 1) * sc.log_ndtr(-z)


def _lp_loggamma(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    # c z - e^z - gammaln(c), rewritten around the mode z = log c so that large c (the
    # normal limit) does not cancel digits: (c log c - c - gammaln c) - c (e^u - 1 - u).
    u = z - np.log(c)
    return _gammaln_stirling_rest(c) + 0.5 * np.log(c) - c * (np.expm1(u) - u)


def _lp_johnsonsu(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.log(b) - 0.5 * np.log1p(z * z) + _lp_norm(a + b * np.arcsinh(z))


def _lp_johnsonsb(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inside = (z > 0) & (z < 1)
    zc = np.where(inside, z, 0.5)
    lz, l1z = np.log(zc), np.log1p(-zc)
    out = np.log(b) - lz - l1z + _lp_norm(a + b * (lz - l1z))
    return np.where(inside, out, -np.inf)


# log K1 for arguments up to 2 from its power series (Abramowitz & Stegun 9.6.11 with
# 9.6.10): K1(x) = 1/x + log(x/2) I1(x) - (x/4) sum_k (psi(k+1) + psi(k+2)) t^k / (k!(k+1)!)
# and I1(x) = (x/2) sum_k t^k / (k!(k+1)!), t = x^2/4 <= 1. Twelve terms leave less than
# 1e-16; in numpy this costs ~60 % of scipy's k1e, which norminvgauss's fits (their
# heavy-tailed optima have alpha ~0.03-0.7, so nearly every node is in this range) spend
# most of their time in.
_K1_TERMS = 12
_I1_SERIES = np.array([1 / (math.factorial(k) * math.factorial(k + 1)) for k in range(_K1_TERMS)])
_HARMONIC = np.concatenate([[0.0], np.cumsum(1 / np.arange(1, _K1_TERMS + 1))])
_K1_SERIES = (-2 * _EULER + _HARMONIC[:-1] + _HARMONIC[1:]) * _I1_SERIES


def _polynomial(coefficients: np.ndarray, t: np.ndarray) -> np.ndarray:
    acc = np.full_like(t, coefficients[-1])
    for c in coefficients[-2::-1]:
        acc *= t
        acc += c
    return acc


def _log_k1e(x: np.ndarray) -> np.ndarray:
    """log(k1e(x)) = log K1(x) + x, for x > 0."""
    out = np.empty_like(x)
    small = x <= 2.0
    xs = x[small]
    t = 0.25 * xs * xs
    k1 = (
        1.0 / xs
        + np.log(0.5 * xs) * (0.5 * xs) * _polynomial(_I1_SERIES, t)
        - 0.25 * xs * _polynomial(_K1_SERIES, t)
    )
    out[small] = np.log(k1) + xs
    out[~small] = np.log(sc.k1e(x[~small]))
    return out


def _lp_norminvgauss(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # sqrt(1 + z^2) rather than hypot (a fifth of the cost): z^2 overflows only for
    # |z| > 1e154, where the objective is then +inf, a rejected point
    r = np.sqrt(1.0 + z * z)
    gamma = np.sqrt(a * a - b * b)
    ar = a * r
    return np.log(a / math.pi) + _log_k1e(ar) - ar - np.log(r) + gamma + b * z


def _lp_laplace_asymmetric(z: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    return -np.log(kappa + 1 / kappa) + np.where(z >= 0, -kappa * z, z / kappa)


def _gammaln_stirling_rest(alpha: np.ndarray) -> np.ndarray:
    """(alpha - 1/2) log(alpha) - alpha - gammaln(alpha), without cancellation for large alpha."""
    big = alpha > 1e3
    safe = np.where(big, alpha, 1.0)
    series = -_LOG_SQRT_2PI - 1 / (12 * safe) + 1 / (360 * safe**3) - 1 / (1260 * safe**5)
    small = np.where(big, 1.0, alpha)
    direct = (small - 0.5) * np.log(small) - small - sc.gammaln(small)
    return np.where(big, series, direct)


def _lp_pearson3(z: np.ndarray, skew: np.ndarray) -> np.ndarray:
    # A gamma(alpha) shifted and scaled to mean 0 and sd 1, written so that it tends to the
    # normal smoothly as skew -> 0 (scipy switches to the normal below |skew| 1.6e-5).
    normal = np.abs(skew) < 1.6e-5
    g = np.where(normal, 1.0, skew)
    alpha = 4.0 / (g * g)
    t = z * g / 2
    inside = t > -1
    tc = np.where(inside, t, 0.0)
    l1t = np.log1p(tc)
    # log density of z: R(alpha) + alpha*(log1p(t) - t) - log1p(t), where the Jacobian
    # sqrt(alpha) and the gamma normalization are folded into R (see above).
    out = alpha * (l1t - tc) - l1t + _gammaln_stirling_rest(alpha)
    out = np.where(inside, out, -np.inf)
    return np.where(normal, _lp_norm(z), out)


def _log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) accurately in every tail."""
    right = sc.log_ndtr(-a) + np.log1p(-np.exp(sc.log_ndtr(-b) - sc.log_ndtr(-a)))
    left = sc.log_ndtr(b) + np.log1p(-np.exp(sc.log_ndtr(a) - sc.log_ndtr(b)))
    middle = np.log1p(-sc.ndtr(a) - sc.ndtr(-b))
    return np.where(a > 0, right, np.where(b < 0, left, middle))


def _lp_truncnorm(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inside = (z >= a) & (z <= b)
    return np.where(inside, _lp_norm(z) - _log_gauss_mass(a, b), -np.inf)


def _lp_vonmises(z: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    return kappa * sc.cosm1(z) - np.log(2 * math.pi * sc.i0e(kappa))


def _lp_vonmises_line(z: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    return np.where(np.abs(z) <= math.pi, _lp_vonmises(z, kappa), -np.inf)


def _lp_crystalball(z: np.ndarray, beta: np.ndarray, m: np.ndarray) -> np.ndarray:
    log_n = -np.log(
        m / beta / (m - 1) * np.exp(-0.5 * beta * beta) + math.sqrt(2 * math.pi) * sc.ndtr(beta)
    )
    core = -0.5 * z * z
    tail_base = np.maximum(m / beta - beta - z, 1e-300)
    tail = m * np.log(m / beta) - 0.5 * beta * beta - m * np.log(tail_base)
    return log_n + np.where(z > -beta, core, tail)


def _lp_cauchy(z: np.ndarray) -> np.ndarray:
    return -math.log(math.pi) - np.log1p(z * z)


def _lp_gumbel_r(z: np.ndarray) -> np.ndarray:
    return -z - np.exp(-z)


def _lp_exponnorm(z: np.ndarray, k: np.ndarray) -> np.ndarray:
    inv = 1.0 / k
    return -np.log(k) + 0.5 * inv * inv - z * inv + sc.log_ndtr(z - inv)


# --------------------------------------------------------------------------------------
# Parametrizations: free (unconstrained) coordinates <-> scipy's (shapes..., loc, scale)

Arrays = tuple[np.ndarray, ...]


def _identity(t: np.ndarray) -> np.ndarray:
    return t


def _above_one(t: np.ndarray) -> np.ndarray:
    return 1.0 + np.exp(t)


def _log_above_one(p: np.ndarray) -> np.ndarray:
    return np.log(p - 1.0)


_REAL = (_identity, _identity)
_SINH = (np.sinh, np.arcsinh)  # a real shape that may run off to +-inf (skewnorm's a)
_ABOVE_ONE = (_above_one, _log_above_one)


def _capped(cap: float) -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    """A positive shape, about exp(t) but never above ``cap``. Shapes that run to infinity
    in a limiting case (t's df, loggamma's c -> the normal) stop where the family no
    longer differs from its limit, before scipy's own formulas lose their digits."""

    def forward(t: np.ndarray) -> np.ndarray:
        return 1.0 / (np.exp(-t) + 1.0 / cap)

    def inverse(p: np.ndarray) -> np.ndarray:
        return -np.log(1.0 / p - 1.0 / cap)

    return forward, inverse


def _at_least(floor: float) -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    """A shape above ``floor`` (exponnorm's K -> 0 limit cancels digits below it)."""
    return (lambda t: floor + np.exp(t)), (lambda p: np.log(p - floor))


@dataclass(frozen=True)
class _LocScale:
    """A location-scale family for the Newton engine.

    ``centre(*shapes)`` gives a location and spread of the standardized family (a mean and
    standard deviation, or a median): the free coordinates are then that location and the
    log of that spread in data units, which straightens the long ridges towards limiting
    cases (loggamma and norminvgauss tend to the normal only as a shape goes to infinity
    while loc and scale run off with it).
    """

    logpdf0: Callable[..., np.ndarray]
    transforms: tuple[tuple[Callable[[np.ndarray], np.ndarray], ...], ...] = ()
    grid: tuple[tuple[float, ...], ...] = ((),)  # shape candidates for the starts
    centre: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    joint: tuple[Callable[[np.ndarray], Arrays], Callable[[Arrays], np.ndarray]] | None = None
    cusp: bool = False  # a non-smooth peak at loc: polish on raw values around it

    @property
    def n_shapes(self) -> int:
        return len(self.grid[0])

    def shapes(self, t: np.ndarray) -> Arrays:
        if self.joint is not None:
            return self.joint[0](t)
        return tuple(f(t[:, i]) for i, (f, _) in enumerate(self.transforms))

    def natural(self, theta: np.ndarray) -> Arrays:
        k = self.n_shapes
        shapes = self.shapes(theta[:, :k])
        shift, spread = self.centre(*shapes) if self.centre else (0.0, 1.0)
        scale = np.exp(theta[:, k + 1]) / spread
        loc = theta[:, k] - scale * shift
        return (*shapes, loc, scale)

    def free(self, nat: tuple[np.ndarray | float, ...]) -> np.ndarray:
        *shapes, loc, scale = (np.atleast_1d(np.asarray(p, dtype=np.float64)) for p in nat)
        shift, spread = self.centre(*shapes) if self.centre else (0.0, 1.0)
        if self.joint is not None:
            lead = self.joint[1](tuple(shapes))
        elif shapes:
            pairs = zip(self.transforms, shapes, strict=True)
            lead = np.column_stack([to_free(p) for (_, to_free), p in pairs])
        else:
            lead = np.empty((len(loc), 0))
        return np.column_stack([lead, loc + scale * shift, np.log(scale * spread)])


def _nig_shapes(t: np.ndarray) -> Arrays:
    a = _capped(1e8)[0](t[:, 0])
    return a, a * np.tanh(t[:, 1])


def _nig_free(shapes: Arrays) -> np.ndarray:
    a, b = shapes
    return np.column_stack([_capped(1e8)[1](a), np.arctanh(b / a)])


def _nig_centre(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gamma = np.sqrt(a * a - b * b)
    return b / gamma, a / gamma**1.5


def _loggamma_centre(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return sc.digamma(c), np.sqrt(sc.polygamma(1, c))


def _genlogistic_centre(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return sc.digamma(c) + _EULER, np.sqrt(sc.polygamma(1, c) + math.pi**2 / 6)


def _skewnorm_centre(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    delta = a / np.sqrt(1 + a * a)
    return delta * math.sqrt(2 / math.pi), np.sqrt(1 - 2 * delta * delta / math.pi)


def _powernorm_centre(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the median: Phi(-z)^c = 1/2, solved in logs so that tiny c does not underflow
    return -sc.ndtri_exp(-math.log(2) / c), np.ones_like(c)


def _johnsonsu_centre(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # as b grows, z ~ (u - a)/b with u standard normal
    return -a / b, 1.0 / b


def _vonmises_line_centre(kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros_like(kappa), 1.0 / np.sqrt(1.0 + kappa)


def _crystalball_grid() -> tuple[tuple[float, ...], ...]:
    return tuple((b, m) for b in (0.5, 1.0, 1.5, 2.0, 3.0) for m in (1.3, 2.0, 3.0, 5.0, 20.0))


def _johnsonsu_grid() -> tuple[tuple[float, ...], ...]:
    return tuple((a, b) for a in (-2.0, -0.5, 0.0, 0.5, 2.0) for b in (0.5, 1.0, 2.0, 4.0))


def _nig_grid() -> tuple[tuple[float, ...], ...]:
    return tuple((a, a * r) for a in (0.3, 1.0, 3.0, 10.0) for r in (-0.5, 0.0, 0.5))


_LOC_SCALE: dict[str, _LocScale] = {
    "logistic": _LocScale(_lp_logistic),
    "hypsecant": _LocScale(_lp_hypsecant),
    "cauchy": _LocScale(_lp_cauchy),
    "gumbel_r": _LocScale(_lp_gumbel_r),
    "gennorm": _LocScale(
        _lp_gennorm,
        (_capped(1e3),),
        tuple((b,) for b in (0.5, 0.8, 1.0, 1.3, 1.6, 2.0, 3.0, 6.0)),
        cusp=True,
    ),
    "t": _LocScale(
        _lp_t,
        (_capped(1e6),),
        tuple((d,) for d in (0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 15.0, 40.0)),
    ),
    "genlogistic": _LocScale(
        _lp_genlogistic,
        (_capped(1e8),),
        tuple((c,) for c in (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 15.0)),
        centre=_genlogistic_centre,
    ),
    "skewnorm": _LocScale(
        _lp_skewnorm,
        (_SINH,),
        tuple((a,) for a in (-6.0, -2.0, -1.0, -0.4, 0.0, 0.4, 1.0, 2.0, 6.0)),
        centre=_skewnorm_centre,
    ),
    "powernorm": _LocScale(
        _lp_powernorm,
        (_capped(1e8),),
        tuple((c,) for c in (0.1, 0.3, 0.6, 1.0, 1.6, 3.0, 10.0, 30.0)),
        centre=_powernorm_centre,
    ),
    "loggamma": _LocScale(
        _lp_loggamma,
        (_capped(1e7),),
        tuple((c,) for c in (0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e3, 1e4, 1e6)),
        centre=_loggamma_centre,
    ),
    "johnsonsu": _LocScale(
        _lp_johnsonsu, (_REAL, _capped(1e8)), _johnsonsu_grid(), centre=_johnsonsu_centre
    ),
    "norminvgauss": _LocScale(
        _lp_norminvgauss, grid=_nig_grid(), centre=_nig_centre, joint=(_nig_shapes, _nig_free)
    ),
    "crystalball": _LocScale(_lp_crystalball, (_capped(1e3), _ABOVE_ONE), _crystalball_grid()),
    "vonmises_line": _LocScale(
        _lp_vonmises_line,
        (_capped(1e8),),
        tuple((k,) for k in (0.3, 1.0, 2.0, 4.0, 8.0, 16.0, 40.0, 150.0)),
        centre=_vonmises_line_centre,
    ),
    "exponnorm": _LocScale(
        _lp_exponnorm,
        (_at_least(0.02),),
        tuple((k,) for k in (0.1, 0.3, 0.6, 1.0, 2.0, 4.0, 10.0, 30.0)),
    ),
}


# --------------------------------------------------------------------------------------
# Engine fits: each fits one family to a batch of samples at once (one Newton step of
# every sample per objective call, see ``newton``) and returns scipy's parameters in
# data units, one result per sample


@dataclass(frozen=True)
class EngineResult:
    params: tuple[float, ...]
    converged: bool
    note: str = ""
    loglik: float | None = None  # set when computed exactly on the full sample


def _wsum(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sums along the last axis by numpy's pairwise summation: unlike a BLAS
    matrix product its rounding does not depend on the thread count, so results are
    bit-identical in any worker process."""
    return np.sum(values * weights, axis=-1)


@dataclass(frozen=True)
class NodeSet:
    """The weighted nodes of a batch of samples (y units), one row per sample, padded to
    the widest with copies of the row's first node at weight 0 (a data point, so its
    log-density is finite wherever the row's is); with per-sample constants."""

    y: np.ndarray  # (S, N)
    w: np.ndarray  # (S, N)
    n: np.ndarray  # (S,) values per sample
    ylo: np.ndarray  # (S,) the extremes, y units
    yhi: np.ndarray


def node_set(
    samples: Sequence[Compressed], nodes: Sequence[tuple[np.ndarray, np.ndarray]]
) -> NodeSet:
    widest = max(len(y) for y, _ in nodes)
    width = -(-widest // SUM_BLOCK) * SUM_BLOCK
    y = np.empty((len(nodes), width))
    w = np.zeros((len(nodes), width))
    for i, (yi, wi) in enumerate(nodes):
        y[i, : len(yi)], y[i, len(yi) :], w[i, : len(wi)] = yi, yi[0], wi
    return NodeSet(
        y,
        w,
        np.array([s.n for s in samples], dtype=np.float64),
        np.array([s.ylo for s in samples]),
        np.array([s.yhi for s in samples]),
    )


def _search_set(samples: Sequence[Compressed], rough: bool = False) -> NodeSet:
    if rough:
        return node_set(samples, [(s.rough_nodes, s.rough_weights) for s in samples])
    return node_set(samples, [(s.nodes, s.weights) for s in samples])


def _two_stage(
    make: Callable[[NodeSet], Objective],
    samples: Sequence[Compressed],
    search: NodeSet,
    starts: Sequence[np.ndarray],
    keep: int = 2,
) -> list[Optimum]:
    """The multistart search on the rough nodes, then Newton on the search nodes
    (``search``, the callers read their parameters from it too) from each sample's rough
    optimum: nearly all steps cost a quarter, and the last few, from within the rough
    rule's error of the optimum, settle it on the finer one."""
    found = multistart(
        make(_search_set(samples, rough=True)), *_stacked(starts), len(samples), keep
    )
    finite = [i for i, opt in enumerate(found) if math.isfinite(opt.value)]
    if not finite:
        return found
    settled = newton(make(search), np.array([found[i].theta for i in finite]), np.array(finite))
    out = list(found)
    for i, opt in zip(finite, settled, strict=True):
        out[i] = opt
    return out


def _mean_nll(log_spread: np.ndarray, lp: np.ndarray, ns: NodeSet, rows: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood per value, +inf where it is not finite."""
    value = log_spread - node_sum(lp, ns.w[rows]) / ns.n[rows]
    return np.where(np.isfinite(value), value, np.inf)


def _neg_loglik(engine: _LocScale, ns: NodeSet) -> Objective:
    """Mean negative log-likelihood per value over each sample's weighted nodes."""

    def objective(theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        *shapes, loc, scale = engine.natural(theta)
        z = ns.y[rows]  # a copy, standardized in place
        z -= loc[:, None]
        z /= scale[:, None]
        with np.errstate(all="ignore"):
            lp = engine.logpdf0(z, *(p[:, None] for p in shapes))
            return _mean_nll(np.log(scale), lp, ns, rows)

    return objective


def _fine_nodes(s: Compressed, loc_y: float, window: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Nodes for a final polish: the fine bins' two-point rule, with the raw values of the
    bins around ``loc`` where a cusp (gennorm with beta < 2) defeats any smooth rule."""
    around = s.bin_of(float(s.to_x(loc_y)))
    exact = np.arange(max(around - window, 0), min(around + window + 1, len(s.y)))
    rest = np.ones(len(s.y), dtype=bool)
    rest[exact] = False
    y, spread, count = s.y[rest], s.spread[rest], s.count[rest]
    raw = (s.raw(exact) - s.center) / s.width
    nodes = np.concatenate([y - spread, y + spread, raw])
    weights = np.concatenate([0.5 * count, 0.5 * count, np.ones(len(raw))])
    return nodes, weights


@functools.cache
def _standard_quartiles(name: str) -> np.ndarray:
    """Quartiles of the standardized family at each start shape: rows (q25, q50, q75)."""
    engine = _LOC_SCALE[name]
    grid = np.array(engine.grid, dtype=np.float64).reshape(len(engine.grid), -1)
    shapes = tuple(grid[:, i : i + 1] for i in range(grid.shape[1]))
    shift, spread = engine.centre(*shapes) if engine.centre else (0.0, 1.0)
    # a grid centred and scaled on each standardized member resolves even narrow ones
    z = shift + spread * np.sinh(np.linspace(-math.asinh(1e6), math.asinh(1e6), 8001))
    z = np.broadcast_to(z, (len(grid), 8001))
    with np.errstate(all="ignore"):
        lp = engine.logpdf0(z, *shapes)
    pdf = np.where(np.isfinite(lp), np.exp(lp), 0.0)
    steps = 0.5 * (pdf[:, 1:] + pdf[:, :-1]) * np.diff(z, axis=1)
    cdf = np.concatenate([np.zeros((len(grid), 1)), np.cumsum(steps, axis=1)], axis=1)
    out = np.empty((len(grid), 3))
    for i, (row, zrow) in enumerate(zip(cdf, z, strict=True)):
        out[i] = np.interp(np.array([0.25, 0.5, 0.75]) * row[-1], row, zrow)
    return out


def _starts(name: str, s: Compressed) -> np.ndarray:
    """Quantile-matched starting points (free coordinates), one per grid shape."""
    engine = _LOC_SCALE[name]
    q = _standard_quartiles(name)
    scale = (s.q75 - s.q25) / (q[:, 2] - q[:, 0])
    loc = 0.0 - scale * q[:, 1]
    grid = np.array(engine.grid, dtype=np.float64).reshape(len(engine.grid), -1)
    shapes = tuple(grid[:, i] for i in range(grid.shape[1]))
    # Far outliers (massive activations) can make every quartile-matched start
    # infinitely unlikely for families with a double-exponential tail (loggamma,
    # gumbel_r): add starts whose spread is a tenth and a hundredth of the range.
    span = s.yhi - s.ylo
    _, spread = engine.centre(*shapes) if engine.centre else (0.0, 1.0)
    wide = [np.maximum(scale, span / k / spread) for k in (10.0, 100.0) if span / k > 20]
    scales = np.concatenate([scale, *wide])
    locs = np.concatenate([loc, *(-w * q[:, 1] for w in wide)])  # medians stay matched
    shapes = tuple(np.tile(p, 1 + len(wide)) for p in shapes)
    return engine.free((*shapes, locs, scales))


def _stacked(starts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's starts in one array, with the sample each belongs to."""
    rows = np.concatenate([np.full(len(st), i, dtype=np.intp) for i, st in enumerate(starts)])
    return np.concatenate(starts), rows


def _polish_cusp(
    engine: _LocScale, samples: Sequence[Compressed], found: list[Optimum]
) -> list[Optimum]:
    """A family with a cusp at loc (gennorm with beta < 2, dweibull) is refined on the
    fine bins plus the raw values around loc, where no smooth rule holds."""
    if not engine.cusp:
        return found
    which = [
        i
        for i, best in enumerate(found)
        if math.isfinite(best.value) and best.iterations < MAX_NEWTON_STEPS
    ]
    if not which:
        return found
    locs = [float(engine.natural(found[i].theta[None])[-2][0]) for i in which]
    chosen = [samples[i] for i in which]
    ns = node_set(chosen, [_fine_nodes(s, loc) for s, loc in zip(chosen, locs, strict=True)])
    # The cusp makes both objectives rough at the scale of the bins or of the data's
    # spacing, so a search or polish that stalls in the line search is done, not failed.
    budget = np.array([3 if found[i].converged else 8 for i in which])
    polished = newton(
        _neg_loglik(engine, ns),
        np.array([found[i].theta for i in which]),
        np.arange(len(which)),
        budget,
    )
    out = list(found)
    for i, opt in zip(which, polished, strict=True):
        out[i] = dataclasses.replace(opt, converged=True, note="")
    return out


def _fit_loc_scale(
    name: str, samples: Sequence[Compressed], given: Sequence[Sequence[float] | None]
) -> list[EngineResult]:
    engine = _LOC_SCALE[name]
    starts = []
    for s, start in zip(samples, given, strict=True):
        if start is None:
            starts.append(_starts(name, s))
        else:  # a given start (a nested family's optimum) is followed alone
            *shapes, loc, scale = start
            starts.append(engine.free((*shapes, (loc - s.center) / s.width, scale / s.width)))
    # two extra probes for one-shape families, one for the costlier two-shape ones
    keep = 3 if engine.n_shapes < 2 else 2
    if engine.cusp:
        # Near a cusp the rough rule misplaces the peak and its basins (real samples' gennorm
        # fits lost up to 6e-3 nats per value from the rough stage): searched on the finer
        # nodes throughout, then polished on raw values.
        cusp = node_set(samples, [(s.cusp_nodes, s.cusp_weights) for s in samples])
        found = multistart(_neg_loglik(engine, cusp), *_stacked(starts), len(samples), keep=keep)
        found = _polish_cusp(engine, samples, found)
    else:
        found = _two_stage(
            lambda ns: _neg_loglik(engine, ns), samples, _search_set(samples), starts, keep
        )
    out = []
    for s, best in zip(samples, found, strict=True):
        if not math.isfinite(best.value):
            out.append(EngineResult((), False, best.note))
            continue
        *shapes, loc, scale = (float(p[0]) for p in engine.natural(best.theta[None]))
        params = (*shapes, float(s.to_x(loc)), s.width * scale)
        out.append(EngineResult(params, best.converged and math.isfinite(best.value), best.note))
    return out


def _fit_norm(s: Compressed) -> EngineResult:
    mean = float(_wsum(s.y, s.count)) / s.n
    var = float(_wsum((s.y - mean) ** 2 + s.spread**2, s.count)) / s.n
    scale = s.width * math.sqrt(var)
    loglik = -s.n * (math.log(scale) + _LOG_SQRT_2PI + 0.5)  # exact at the MLE
    return EngineResult((float(s.to_x(mean)), scale), True, loglik=loglik)


def _fit_laplace(s: Compressed) -> EngineResult:
    # The median is y = 0 exactly, and a bin edge, so the mean absolute deviation is exact.
    scale = s.width * float(_wsum(np.abs(s.y), s.count)) / s.n
    loglik = -s.n * (math.log(2 * scale) + 1)  # exact at the MLE
    return EngineResult((s.center, scale), True, loglik=loglik)


def _fit_laplace_asymmetric(s: Compressed) -> EngineResult:
    """Exact MLE. For a location theta the best kappa and scale are closed-form and the
    profile log-likelihood is -2n log(sqrt(a) + sqrt(b)) - n, with a and b the mean
    excesses above and below theta; sqrt(a) + sqrt(b) is concave between data points, so
    its minimum is at one. Bins locate it; the raw values around that bin settle it."""
    n, total = s.n, float(_wsum(s.y, s.count))
    ccount, csum = np.cumsum(s.count), np.cumsum(s.count * s.y)
    with np.errstate(invalid="ignore"):
        below = (ccount - s.count) * s.y - (csum - s.count * s.y)
        above = (total - csum) - (n - ccount) * s.y
        coarse = np.sqrt(np.maximum(above, 0.0)) + np.sqrt(np.maximum(below, 0.0))
    j = int(np.argmin(coarse))
    first, last = max(j - 3, 0), min(j + 3, len(s.y) - 1)
    y = (s.raw(np.arange(first, last + 1)) - s.center) / s.width
    idx = s.starts[first] + np.arange(len(y))
    before = csum[first] - s.count[first] * s.y[first]  # sum of all values below the window
    c_below = before + np.cumsum(y) - y
    below = np.maximum(idx * y - c_below, 0.0) / n
    above = np.maximum((total - c_below - y) - (n - idx - 1) * y, 0.0) / n
    # kappa = (b/a)^(1/4) needs values on both sides; at an extreme the profile tends to
    # an exponential limit, which the nearest interior value approaches
    profile = np.where((above > 0) & (below > 0), np.sqrt(above) + np.sqrt(below), np.inf)
    i = int(np.argmin(profile))
    a, b = float(above[i]), float(below[i])
    if not math.isfinite(profile[i]):
        return EngineResult((), False, "no location with values on both sides")
    kappa = (b / a) ** 0.25
    scale = s.width * (kappa * a + b / kappa)
    loglik = -n * (math.log(scale) + math.log(kappa + 1 / kappa) + 1)
    return EngineResult((kappa, float(s.to_x(y[i])), scale), True, loglik=loglik)


def _fit_truncnorm(samples: Sequence[Compressed]) -> list[EngineResult]:
    """The MLE puts the truncation points at the sample's extremes (a tighter support only
    raises the density of every value), leaving loc and scale to optimize."""
    ns = _search_set(samples)
    pad = 1e-9 * (ns.yhi - ns.ylo)
    ylo, yhi = ns.ylo - pad, ns.yhi + pad

    def objective(theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        loc, scale = theta[:, 0], np.exp(theta[:, 1])
        a, b = (ylo[rows] - loc) / scale, (yhi[rows] - loc) / scale
        z = (ns.y[rows] - loc[:, None]) / scale[:, None]
        with np.errstate(all="ignore"):
            log_norm = np.log(scale) + _log_gauss_mass(a, b) + _LOG_SQRT_2PI
            return _mean_nll(log_norm, -0.5 * z * z, ns, rows)

    starts = []
    for s in samples:
        mean = float(_wsum(s.y, s.count)) / s.n
        sd = math.sqrt(float(_wsum((s.y - mean) ** 2 + s.spread**2, s.count)) / s.n)
        mine = [[mean, math.log(sd * f)] for f in (0.5, 1.0, 2.0, 5.0)]
        starts.append(np.array([*mine, [0.0, 0.0], [s.ylo, math.log(sd)], [s.yhi, math.log(sd)]]))
    theta, rows = _stacked(starts)
    values = objective(theta, rows).reshape(len(samples), -1)
    first = np.array([st[int(np.argmin(v))] for st, v in zip(starts, values, strict=True)])
    out = []
    for s, best in zip(samples, newton(objective, first, np.arange(len(samples))), strict=True):
        loc = float(s.to_x(best.theta[0]))
        scale = s.width * math.exp(best.theta[1])
        span = s.hi - s.lo
        a = (s.lo - 1e-9 * span - loc) / scale
        b = (s.hi + 1e-9 * span - loc) / scale
        out.append(EngineResult((a, b, loc, scale), best.converged, best.note))
    return out


def _johnsonsb_profile(ns: NodeSet, theta: np.ndarray, rows: np.ndarray) -> Arrays:
    """For support edges at (log) distances theta beyond the extremes: a and b (the
    normal MLE of the logits), the support and the logits' pieces."""
    span = ns.yhi[rows] - ns.ylo[rows]
    far = _capped(1e6)[0]  # beyond a million spans johnsonsb is its limit
    lower = ns.ylo[rows] - span * (1e-12 + far(theta[:, 0]))
    upper = ns.yhi[rows] + span * (1e-12 + far(theta[:, 1]))
    width = upper - lower
    z = (ns.y[rows] - lower[:, None]) / width[:, None]
    lz, l1z = np.log(z), np.log1p(-z)
    logit = lz - l1z
    w, n = ns.w[rows], ns.n[rows]
    mean = node_sum(logit, w) / n
    var = node_sum((logit - mean[:, None]) ** 2, w) / n
    b = 1.0 / np.sqrt(var)
    a = -mean * b
    return a, b, lower, width, lz, l1z, logit


def _johnsonsb_nll(ns: NodeSet) -> Objective:
    def objective(theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            a, b, _, width, lz, l1z, logit = _johnsonsb_profile(ns, theta, rows)
            lp = -lz - l1z + _lp_norm(a[:, None] + b[:, None] * logit)
            return _mean_nll(np.log(width) - np.log(b), lp, ns, rows)

    return objective


def _fit_johnsonsb(samples: Sequence[Compressed]) -> list[EngineResult]:
    """Given the support [L, U], a and b are the normal MLE of logit((x-L)/(U-L)); the
    search is over how far L and U sit beyond the sample's extremes (log distances)."""
    grid = np.array(
        [(p, q) for p in (-4.0, -2.0, 0.0, 2.0, 5.0, 9.0) for q in (-4.0, -2.0, 0.0, 2.0, 5.0, 9.0)]
    )
    ns = _search_set(samples)
    found = _two_stage(_johnsonsb_nll, samples, ns, [grid] * len(samples))
    out = []
    for i, (s, best) in enumerate(zip(samples, found, strict=True)):
        with np.errstate(all="ignore"):
            a, b, lower, width, *_ = _johnsonsb_profile(ns, best.theta[None], np.array([i]))
        params = (float(a[0]), float(b[0]), float(s.to_x(lower[0])), s.width * float(width[0]))
        out.append(EngineResult(params, best.converged and math.isfinite(best.value), best.note))
    return out


def _fit_vonmises(s: Compressed) -> EngineResult:
    """scipy's own vonmises fit (circular mean, kappa from the mean resultant length, scale
    fixed at 1), with its log-likelihood exact from the same two trigonometric sums. Bins
    wider than 0.02 (relative to the period 2 pi) are summed over their raw values."""
    n = s.n
    wide = np.flatnonzero(s.width * s.spread > 0.02)
    c = sample_sum(np.cos, s, wide)
    si = sample_sum(np.sin, s, wide)
    loc = math.atan2(si, c)
    r = (c * math.cos(loc) + si * math.sin(loc)) / n
    if r >= 1:
        kappa = 1e16
    elif r > 0:
        low = r / (1 - r) / (1 + r)

        def gap(kappa: float) -> float:
            return float(sc.i1e(kappa) / sc.i0e(kappa)) - r

        if gap(low) >= 0:
            kappa = low
        elif gap(2 * low) <= 0:
            kappa = 2 * low
        else:
            kappa = brentq(gap, low, 2 * low)
    else:
        kappa = float(np.finfo(float).tiny)
    loglik = kappa * (r * n - n) - n * math.log(2 * math.pi * float(sc.i0e(kappa)))
    return EngineResult((kappa, loc, 1.0), True, loglik=loglik)


Natural = Callable[[np.ndarray, np.ndarray], Arrays]


def _shaped_nll(natural: Natural, logpdf0: Callable[..., np.ndarray], ns: NodeSet) -> Objective:
    """The negative log-likelihood of a one-shape location-scale family whose free
    coordinates map to (shape, loc, scale) through each sample's own extremes."""

    def objective(theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        shape, loc, scale = natural(theta, rows)
        z = ns.y[rows]  # a copy, standardized in place
        z -= loc[:, None]
        z /= scale[:, None]
        with np.errstate(all="ignore"):
            return _mean_nll(np.log(scale), logpdf0(z, shape[:, None]), ns, rows)

    return objective


def _fit_shaped(
    make_natural: Callable[[NodeSet], Natural],
    logpdf0: Callable[..., np.ndarray],
    samples: Sequence[Compressed],
    starts: Sequence[np.ndarray],
) -> list[tuple[tuple[float, ...], Optimum]]:
    """The two-stage search of a family whose free coordinates map to (shape, loc, scale)
    through each sample's extremes; per sample those (y units) and the optimum."""
    search = _search_set(samples)
    found = _two_stage(
        lambda ns: _shaped_nll(make_natural(ns), logpdf0, ns), samples, search, starts
    )
    natural = make_natural(search)
    return [
        (tuple(float(p[0]) for p in natural(best.theta[None], np.array([i]))), best)
        for i, best in enumerate(found)
    ]


def _pearson3_natural(ns: NodeSet) -> Natural:
    def natural(theta: np.ndarray, rows: np.ndarray) -> Arrays:
        mean, sd = theta[:, 1], np.exp(theta[:, 2])
        ylo, yhi = ns.ylo[rows], ns.yhi[rows]
        with np.errstate(all="ignore"):
            most = 2 * sd / (mean - ylo)  # the largest skew keeping the minimum inside
            least = -2 * sd / (yhi - mean)
            skew = least + (most - least) * sc.expit(theta[:, 0])
        inside = (mean > ylo) & (mean < yhi)
        return np.where(inside, skew, np.nan), mean, sd

    return natural


def _fit_pearson3(samples: Sequence[Compressed]) -> list[EngineResult]:
    """pearson3 is a gamma with mean loc, sd scale and skewness skew, whose support ends at
    loc - 2 scale / skew; the MLE of a skewed sample often presses that edge against an
    extreme value. The search runs over (w, mean, log sd) with the skewness mapped into
    the open interval that keeps every value inside the support: every point is
    feasible, skew 0 (the normal) is an ordinary interior point, and an edge at the data
    is w -> +-inf."""
    skew = np.array([-2.0, -1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 2.0])
    alpha = 4 / np.maximum(skew * skew, 1e-12)
    quart = np.array([0.25, 0.5, 0.75])
    q = (sc.gammaincinv(alpha[:, None], quart) - alpha[:, None]) / np.sqrt(alpha[:, None])
    q = np.where(skew[:, None] < 0, -q[:, ::-1], q)  # a negative skew mirrors the gamma
    starts = []
    for s in samples:
        scale = (s.q75 - s.q25) / (q[:, 2] - q[:, 0])
        mean = np.clip(-scale * q[:, 1], s.ylo + 1e-3, s.yhi - 1e-3)
        most, least = 2 * scale / (mean - s.ylo), -2 * scale / (s.yhi - mean)
        share = np.clip((skew - least) / (most - least), 1e-3, 1 - 1e-3)
        starts.append(np.column_stack([sc.logit(share), mean, np.log(scale)]))
    fitted = _fit_shaped(_pearson3_natural, _lp_pearson3, samples, starts)
    out = []
    for s, ((skew_, loc, scale_), best) in zip(samples, fitted, strict=True):
        params = (skew_, float(s.to_x(loc)), s.width * scale_)
        out.append(EngineResult(params, best.converged and math.isfinite(best.value), best.note))
    return out


def _vonmises_line_natural(ns: NodeSet) -> Natural:
    def natural(theta: np.ndarray, rows: np.ndarray) -> Arrays:
        span = ns.yhi[rows] - ns.ylo[rows]
        lower = ns.ylo[rows] - span * (1e-12 + np.exp(theta[:, 1]))
        upper = ns.yhi[rows] + span * (1e-12 + np.exp(theta[:, 2]))
        kappa = _capped(1e8)[0](theta[:, 0])
        return kappa, 0.5 * (lower + upper), (upper - lower) / (2 * math.pi)

    return natural


def _fit_vonmises_line(samples: Sequence[Compressed]) -> list[EngineResult]:
    """The support [loc - pi scale, loc + pi scale] must hold every value, and the MLE
    often presses an edge against an extreme value. So the search runs over kappa and the
    (log) distances of the two edges beyond the extremes: every point is feasible, an edge
    at the data is a distance going to zero, and the normal limit (kappa and both
    distances growing together) is a straight ridge."""
    engine = _LOC_SCALE["vonmises_line"]
    starts = []
    for s in samples:
        start = _starts("vonmises_line", s)
        kappa0, loc0, scale0 = (np.atleast_1d(p) for p in engine.natural(start))
        width = s.yhi - s.ylo
        beyond_lo = np.maximum(s.ylo - (loc0 - math.pi * scale0), 1e-3 * width)
        beyond_hi = np.maximum((loc0 + math.pi * scale0) - s.yhi, 1e-3 * width)
        free_kappa = _capped(1e8)[1](kappa0)
        starts.append(
            np.column_stack([free_kappa, np.log(beyond_lo / width), np.log(beyond_hi / width)])
        )
    fitted = _fit_shaped(_vonmises_line_natural, _lp_vonmises_line, samples, starts)
    out = []
    for s, ((kappa, loc, scale), best) in zip(samples, fitted, strict=True):
        loc_x, scale_x = float(s.to_x(loc)), s.width * scale
        # rounding must not push an extreme value outside the support
        scale_x = max(scale_x, max(s.hi - loc_x, loc_x - s.lo) / math.pi * (1 + 1e-12))
        out.append(EngineResult((kappa, loc_x, scale_x), best.converged, best.note))
    return out


def _scipy_shape_transform(lo: float, hi: float) -> tuple[Callable, Callable]:
    if math.isinf(lo) and math.isinf(hi):
        return _REAL
    if math.isinf(hi):
        floor = 0.0 if lo < 1e-300 else lo
        return (lambda t, f=floor: f + np.exp(t), lambda p, f=floor: np.log(p - f))
    return (
        lambda t, a=lo, b=hi: a + (b - a) * sc.expit(t),
        lambda p, a=lo, b=hi: sc.logit((p - a) / (b - a)),
    )


# scipy-backed families started from a numpy relative's fit instead of scipy's generic
# fit on a subsample (which takes tens of seconds for nct)
_STARTS_FROM: dict[str, tuple[str, Callable[[tuple[float, ...]], tuple[float, ...]]]] = {
    "nct": ("t", lambda p: (p[0], 0.0, p[1], p[2])),
}


def _fit_scipy_backed(
    name: str,
    s: Compressed,
    x: np.ndarray,
    subsample: int,
    seed: int,
    start: Sequence[float] | None = None,
) -> EngineResult:
    """Families without a numpy density here (one sample at a time): start from scipy's
    fit on a subsample, then the same Newton refinement on the bins with scipy's logpdf."""
    dist = FAMILIES[name]
    if start is None and name in _STARTS_FROM:
        relative, embed = _STARTS_FROM[name]
        start = embed(fit_engine(relative, s, x).params)
    if start is None:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            start = dist.fit(deterministic_subsample(x, max(subsample, 500), seed))
    domains = [i.domain for i in dist._shape_info()]  # scipy's own declaration of the ranges
    engine = _LocScale(
        lambda z, *shapes: dist.logpdf(z, *shapes),
        tuple(_scipy_shape_transform(float(lo), float(hi)) for lo, hi in domains),
        (tuple(float(p) for p in start[:-2]),),
        cusp=name == "dweibull",
    )
    objective = _neg_loglik(engine, _search_set([s]))
    *shapes, loc, scale = (float(p) for p in start)
    loc, scale = (loc - s.center) / s.width, scale / s.width
    # a start from a subsample may leave full-sample extremes outside a bounded support:
    # widen it, and move a lower bound below the minimum
    lower = float(dist.support(*shapes, loc=loc, scale=scale)[0])
    shift = max(lower - s.ylo, 0.0) + 0.05 * (s.yhi - s.ylo) if lower > s.ylo else 0.0
    candidates = [(loc - d, scale * m) for d in (0.0, shift) for m in (1.0, 2.0, 5.0, 20.0)]
    starts = np.concatenate([engine.free((*shapes, lc, sc_)) for lc, sc_ in candidates])
    found = multistart(objective, starts, np.zeros(len(starts), dtype=np.intp), 1, keep=2)
    best = _polish_cusp(engine, [s], found)[0]
    *shapes, loc, scale = (float(p[0]) for p in engine.natural(best.theta[None]))
    params = (*shapes, float(s.to_x(loc)), s.width * scale)
    return EngineResult(params, best.converged and math.isfinite(best.value), best.note)


_CLOSED_FORM: dict[str, Callable[[Compressed], EngineResult]] = {
    "norm": _fit_norm,
    "laplace": _fit_laplace,
    "laplace_asymmetric": _fit_laplace_asymmetric,
    "vonmises": _fit_vonmises,
}
_BATCHED: dict[str, Callable[[Sequence[Compressed]], list[EngineResult]]] = {
    "truncnorm": _fit_truncnorm,
    "johnsonsb": _fit_johnsonsb,
    "vonmises_line": _fit_vonmises_line,
    "pearson3": _fit_pearson3,
}


def fit_batch(
    name: str,
    samples: Sequence[Compressed],
    xs: Sequence[np.ndarray],
    subsample: int = 4000,
    seed: int = 0,
    starts: Sequence[Sequence[float] | None] | None = None,
) -> list[EngineResult]:
    """Maximum-likelihood parameters of one family for each sample (scipy's
    parametrization, data units), the samples fitted together; ``starts[i]`` (scipy's
    parameters, or None) replaces sample i's starting grid where a grid is used. A
    sample's result does not depend on the others in the batch."""
    given = list(starts) if starts is not None else [None] * len(samples)
    if name in _CLOSED_FORM:
        return [_CLOSED_FORM[name](s) for s in samples]
    if name in _BATCHED:
        return _BATCHED[name](samples)
    if name in _LOC_SCALE:
        return _fit_loc_scale(name, samples, given)
    return [
        _fit_scipy_backed(name, s, x, subsample, seed, start)
        for s, x, start in zip(samples, xs, given, strict=True)
    ]


def fit_engine(
    name: str,
    s: Compressed,
    x: np.ndarray,
    subsample: int = 4000,
    seed: int = 0,
    start: Sequence[float] | None = None,
) -> EngineResult:
    """One family's maximum-likelihood parameters for one sample (see ``fit_batch``)."""
    return fit_batch(name, [s], [x], subsample, seed, [start])[0]


_LOGPDF0: dict[str, Callable[..., np.ndarray]] = {
    **{name: engine.logpdf0 for name, engine in _LOC_SCALE.items()},
    "norm": _lp_norm,
    "laplace": _lp_laplace,
    "laplace_asymmetric": _lp_laplace_asymmetric,
    "truncnorm": _lp_truncnorm,
    "pearson3": _lp_pearson3,
    "johnsonsb": _lp_johnsonsb,
    "vonmises": _lp_vonmises,
}


def has_numpy_density(name: str) -> bool:
    return name in _LOGPDF0


def logpdf_rows(name: str, x: np.ndarray, params: Sequence[Sequence[float]]) -> np.ndarray:
    """``logpdf`` of each row of ``x`` (S, L) under its own parameters ``params[i]``, all
    rows in one numpy pass (families with a numpy density only). Every element is
    computed exactly as ``logpdf`` computes it for that row alone."""
    *shapes, loc, scale = np.array(params, dtype=np.float64).T[:, :, None]
    log_scale = np.array([[math.log(p[-1])] for p in params])  # as logpdf takes it
    with np.errstate(all="ignore"):
        return _LOGPDF0[name]((x - loc) / scale, *shapes) - log_scale


def logpdf(name: str, x: np.ndarray, params: Sequence[float]) -> np.ndarray:
    """Log-density at ``x``: the numpy form where there is one, else scipy's."""
    if name not in _LOGPDF0:
        return FAMILIES[name].logpdf(x, *params)
    *shapes, loc, scale = params
    with np.errstate(all="ignore"):
        return _LOGPDF0[name]((np.asarray(x) - loc) / scale, *shapes) - math.log(scale)
