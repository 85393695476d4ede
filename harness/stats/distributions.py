"""Fitting and ranking distribution families: maximum-likelihood fits, validity checks,
the study's criteria (log-likelihood, AIC, BIC, histogram SSE).

Two fitting paths share one scoring step:

- the engine (``rank``'s default, ``harness.stats.fit_engine``): the sample compressed into
  about a thousand narrow bins, closed-form maximum likelihood where it exists, a damped
  Newton method on weighted nodes elsewhere. Parametrizations keep the search well posed:
  location and spread of the family rather than loc/scale where a shape runs to a limit
  (loggamma, norminvgauss, genlogistic, ...), bounded supports written so that every point
  of the search holds the data (truncnorm, johnsonsb, pearson3, vonmises_line), shapes
  capped where the family equals its limit. The reported log-likelihood is a two-point rule
  per fine bin (raw values at the extremes and around loc), within ~1e-9 per value of the
  full-sample sum, and the parameters are scipy's: ``FAMILIES[name].logpdf(x,
  *params).sum()`` reproduces it.
- the reference (``fit_reference``, or ``rank(..., method="scipy")`` on a subsample):
  scipy's generic ``dist.fit``, the study's method, kept for tests and the benchmark.

Family names and sets live in ``harness.stats.families`` (no scipy import).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from harness.stats.families import check_names
from harness.stats.fit_engine import (
    FAMILIES,
    SSE_BINS,
    Compressed,
    EngineResult,
    compress,
    deterministic_subsample,
    fit_batch,
    has_numpy_density,
    logpdf,
    logpdf_rows,
    validated,
)


@dataclass(frozen=True)
class FamilyFit:
    name: str
    params: tuple[float, ...]
    loglik: float
    aic: float
    bic: float
    sse: float
    converged: bool
    valid: bool
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class Ranking:
    n: int
    fits: tuple[FamilyFit, ...]

    def winner(self, criterion: str = "aic") -> str | None:
        """Best valid, converged family by the criterion (lower is better)."""
        usable = [
            f for f in self.fits if f.valid and f.converged and math.isfinite(getattr(f, criterion))
        ]
        if not usable:
            return None
        return min(usable, key=lambda f: getattr(f, criterion)).name

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "family": f.name,
                    "loglik": f.loglik,
                    "aic": f.aic,
                    "bic": f.bic,
                    "sse": f.sse,
                    "converged": f.converged,
                    "valid": f.valid,
                    "seconds": f.seconds,
                    "note": f.note,
                }
                for f in self.fits
            ]
        )


def density_histogram(x: np.ndarray, bins: int = SSE_BINS) -> tuple[np.ndarray, np.ndarray]:
    heights, edges = np.histogram(x, bins=bins, density=True)
    return 0.5 * (edges[:-1] + edges[1:]), heights


# --------------------------------------------------------------------------------------
# Scoring shared by both paths


def validity_grid(lo: float, hi: float, extra: np.ndarray) -> np.ndarray:
    """Where ``_validity`` integrates a density: 1025 even points over the data's range
    plus data-adaptive ones, so that a narrow core beside far outliers is still resolved.
    Computed once per sample and shared by its families."""
    return np.unique(
        np.concatenate([np.linspace(lo, hi, 1025), extra[(extra > lo) & (extra < hi)]])
    )


def _validity(density: Callable[[np.ndarray], np.ndarray], grid: np.ndarray) -> str:
    """Empty when the fitted density is a proper density on the data (``grid`` spans it
    from its minimum to its maximum), else the reason."""
    with np.errstate(all="ignore"):
        log_ends = density(grid[[0, -1]])
        mass = float(np.trapezoid(np.exp(density(grid)), grid))
    return _validity_reason(log_ends, mass)


def _validity_reason(log_ends: np.ndarray, mass: float) -> str:
    """Periodic families (vonmises) evaluated on unbounded data can report likelihoods far
    above every real family; their pdf then integrates to far more than 1 over the data."""
    if not np.isfinite(log_ends).all():
        return "data outside the fitted support"
    if not (0.9 <= mass <= 1.02):
        return f"density integrates to {mass:.3g} over the data's range"
    return ""


def check_validity(dist: stats.rv_continuous, params: tuple[float, ...], x: np.ndarray) -> str:
    """Empty when the fitted density is a proper density on the data, else the reason."""
    lo, hi = float(np.min(x)), float(np.max(x))
    iqr = float(np.subtract(*np.percentile(x, [75, 25])))
    extra = np.median(x) + iqr * np.sinh(np.linspace(-20, 20, 4097))
    return _validity(lambda v: dist.logpdf(v, *params), validity_grid(lo, hi, extra))


def _failed(name: str, started: float, note: str) -> FamilyFit:
    return FamilyFit(
        name,
        (),
        -math.inf,
        math.inf,
        math.inf,
        math.inf,
        False,
        False,
        time.perf_counter() - started,
        note,
    )


def _assemble(
    name: str,
    params: tuple[float, ...],
    loglik: float,
    n: int,
    converged: bool,
    reason: str,
    sse: float,
    started: float,
    note: str = "",
) -> FamilyFit:
    k = len(params)
    converged = converged and math.isfinite(loglik)
    if not math.isfinite(loglik):
        reason = "non-finite log-likelihood"
    notes = "; ".join(r for r in (reason, note) if r)
    return FamilyFit(
        name=name,
        params=params,
        loglik=loglik,
        aic=2 * k - 2 * loglik,
        bic=k * math.log(n) - 2 * loglik,
        sse=sse if math.isfinite(sse) else math.inf,
        converged=converged,
        valid=converged and not reason,
        seconds=time.perf_counter() - started,
        note=notes,
    )


def fit_family(name: str, x: np.ndarray, fit_on: np.ndarray | None = None) -> FamilyFit:
    """Maximum likelihood with scipy's generic fit on ``fit_on``; scored on all of ``x``."""
    dist = FAMILIES[name]
    fit_on = x if fit_on is None else fit_on
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            params = tuple(float(p) for p in dist.fit(fit_on))
            loglik = float(dist.logpdf(x, *params).sum())
    except Exception as exc:  # a family that fails is a recorded result, never a crash
        return _failed(name, started, f"fit failed: {exc}")
    reason = check_validity(dist, params, x) if math.isfinite(loglik) else ""
    centers, heights = density_histogram(x)
    with np.errstate(all="ignore"):
        sse = float(np.sum((dist.pdf(centers, *params) - heights) ** 2))
    return _assemble(name, params, loglik, len(x), True, reason, sse, started)


def fit_reference(name: str, x: np.ndarray) -> FamilyFit:
    """The study's method: scipy's generic fit on the full sample, scored the same way."""
    return fit_family(name, validated(x))


@dataclass(frozen=True)
class _Sample:
    """One sample as the engine path needs it: the values, their compressed form, the grid
    its densities are checked on (and its steps), and the two-point rule's nodes (x units)
    and weights over all its fine bins, which every family's log-likelihood sums."""

    x: np.ndarray
    s: Compressed
    grid: np.ndarray
    grid_steps: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray


def _prepared(x: np.ndarray) -> _Sample:
    x = validated(x)
    s = compress(x)  # refuses degenerate samples
    grid = validity_grid(s.lo, s.hi, s.edges)
    nodes = s.to_x(np.concatenate([s.y - s.spread, s.y + s.spread]))
    return _Sample(x, s, grid, np.diff(grid), nodes, np.concatenate([s.count, s.count]))


def _exact_bins(s: Compressed, loc: float) -> np.ndarray:
    """The bins a log-likelihood sums over raw values: the extremes, and around ``loc``
    (a kink for laplace-like families)."""
    around = s.bin_of(loc)
    near = np.arange(around - 3, around + 4)
    return np.unique(np.clip(np.concatenate([[0, len(s.y) - 1], near]), 0, len(s.y) - 1))


def _density_rows(name: str, x: np.ndarray, params: Sequence[tuple[float, ...]]) -> np.ndarray:
    if has_numpy_density(name):
        return logpdf_rows(name, x, params)
    with np.errstate(all="ignore"):
        return np.stack([logpdf(name, row, p) for row, p in zip(x, params, strict=True)])


def score_batch(
    name: str, fits: Sequence[EngineResult], samples: Sequence[_Sample], seconds: float
) -> list[FamilyFit]:
    """Log-likelihood, criteria and validity of one family's engine parameters for each
    sample. Each sample's densities (histogram centres, validity grid, the two-point
    rule's nodes and the raw values of its exact bins) are one row of a padded matrix,
    evaluated in one numpy pass for all samples; each row's sums are taken alone, so a
    sample's scores are those it gets alone. ``seconds``: the fitting's time per sample,
    to which each adds its share of the scoring."""
    started = time.perf_counter()
    done = [(i, tuple(float(p) for p in f.params)) for i, f in enumerate(fits) if f.params]
    rows, exact = [], {}
    for i, params in done:
        p = samples[i]
        parts = [p.s.sse_centers, p.grid]
        if fits[i].loglik is None:
            exact[i] = _exact_bins(p.s, params[-2])
            parts += [p.nodes, p.s.raw(exact[i])]
        rows.append(np.concatenate(parts))
    scored = {}
    if done:
        values = np.empty((len(rows), max(len(r) for r in rows)))
        for row, r in zip(values, rows, strict=True):
            row[: len(r)], row[len(r) :] = r, r[0]
        dens = _density_rows(name, values, [params for _, params in done])
        with np.errstate(all="ignore"):
            pdf = np.exp(dens)
    for j, (i, params) in enumerate(done):
        p, fit = samples[i], fits[i]
        hist, grid = len(p.s.sse_centers), len(p.grid)
        loglik = fit.loglik
        if loglik is None:
            # the two-point rule over the bins not summed exactly, then those bins' values
            rest = np.ones(len(p.s.y), dtype=bool)
            rest[exact[i]] = False
            rest = np.concatenate([rest, rest])
            at = hist + grid
            nodes = dens[j, at : at + len(p.nodes)][rest]
            loglik = 0.5 * float(np.sum(nodes * p.weights[rest]))
            loglik += float(dens[j, at + len(p.nodes) : len(rows[j])].sum())
        reason = ""
        if math.isfinite(loglik):
            e = pdf[j, hist : hist + grid]
            with np.errstate(all="ignore"):
                mass = float(np.sum(p.grid_steps * (e[1:] + e[:-1]) / 2.0))  # np.trapezoid
            reason = _validity_reason(dens[j, [hist, hist + grid - 1]], mass)
        with np.errstate(all="ignore"):
            sse = float(np.sum((pdf[j, :hist] - p.s.sse_heights) ** 2))
        scored[i] = (params, loglik, reason, sse)
    share = seconds + (time.perf_counter() - started) / max(len(fits), 1)
    out = []
    for i, fit in enumerate(fits):
        began = time.perf_counter() - share
        if i not in scored:
            out.append(_failed(name, began, fit.note or "fit failed"))
            continue
        params, loglik, reason, sse = scored[i]
        n = samples[i].s.n
        out.append(_assemble(name, params, loglik, n, fit.converged, reason, sse, began, fit.note))
    return out


def _fit_family(
    name: str,
    samples: Sequence[_Sample],
    subsample: int,
    seed: int,
    starts: Sequence[Sequence[float] | None] | None = None,
) -> list[FamilyFit]:
    """One family on every sample, fitted together; each fit's seconds are its share of
    the batch's fitting time plus its own scoring."""
    if not samples:
        return []
    started = time.perf_counter()
    try:
        fits = fit_batch(
            name, [p.s for p in samples], [p.x for p in samples], subsample, seed, starts
        )
    except Exception as exc:  # a family that fails is a recorded result, never a crash
        if len(samples) == 1:
            return [_failed(name, started, f"fit failed: {type(exc).__name__}: {exc}")]
        # one sample's failure must not take the others' fits with it: each alone
        given = list(starts) if starts is not None else [None] * len(samples)
        return [
            _fit_family(name, [p], subsample, seed, [start])[0]
            for p, start in zip(samples, given, strict=True)
        ]
    return score_batch(name, fits, samples, (time.perf_counter() - started) / len(samples))


def fit_fast(name: str, x: np.ndarray, subsample: int = 4000, seed: int = 0) -> FamilyFit:
    """One family by the engine; failures are recorded, never raised."""
    return _fit_family(name, [_prepared(x)], subsample, seed)[0]


# (wider family, nested family, the nested family's parameters as the wider one's): the
# wider family's maximum can never be below the nested one's.
NESTED: tuple[tuple[str, str, Callable[[tuple[float, ...]], tuple[float, ...]]], ...] = (
    ("genlogistic", "logistic", lambda p: (1.0, *p)),
    ("gennorm", "laplace", lambda p: (1.0, *p)),
    ("gennorm", "norm", lambda p: (2.0, p[0], p[1] * math.sqrt(2))),
    ("skewnorm", "norm", lambda p: (0.0, *p)),
    ("powernorm", "norm", lambda p: (1.0, *p)),
    ("t", "cauchy", lambda p: (1.0, *p)),
    ("nct", "t", lambda p: (p[0], 0.0, p[1], p[2])),
)


def _enforce_nesting(
    fits: list[dict[str, FamilyFit]], samples: Sequence[_Sample], subsample: int, seed: int
) -> None:
    """Refit a wider family from the nested family's optimum where it ended below it (a
    local optimum), so that nested families tie at worst, as they must (in place)."""
    for wide, narrow, embed in NESTED:
        behind = [
            i
            for i, (f, p) in enumerate(zip(fits, samples, strict=True))
            if wide in f
            and narrow in f
            and f[narrow].params
            and not f[wide].loglik >= f[narrow].loglik - 1e-9 * p.s.n
        ]
        if not behind:
            continue
        starts = [embed(fits[i][narrow].params) for i in behind]
        refits = _fit_family(wide, [samples[i] for i in behind], subsample, seed, starts)
        for i, refit in zip(behind, refits, strict=True):
            if refit.loglik > fits[i][wide].loglik:
                seconds = fits[i][wide].seconds + refit.seconds
                fits[i][wide] = dataclasses.replace(refit, seconds=seconds)


def rank_many(
    xs: Sequence[np.ndarray], families: tuple[str, ...], subsample: int = 4000, seed: int = 0
) -> list[Ranking | ValueError]:
    """``rank`` (the engine) for many samples at once: each family is fitted to all of
    them together, one batched Newton step for all, which pays numpy's per-call overhead
    once per step instead of once per sample. Each sample's ranking is the one ``rank``
    gives it alone. A sample that cannot be fitted (NaN/inf, too few values, constant)
    has its ValueError in its place. Raises FamilyError for unknown names."""
    check_names(families)
    out: list[Ranking | ValueError | None] = [None] * len(xs)
    samples, where = [], []
    for i, x in enumerate(xs):
        try:
            samples.append(_prepared(x))
            where.append(i)
        except ValueError as exc:
            out[i] = exc
    per_family = {name: _fit_family(name, samples, subsample, seed) for name in families}
    fits = [{name: per_family[name][j] for name in families} for j in range(len(samples))]
    _enforce_nesting(fits, samples, subsample, seed)
    for i, p, f in zip(where, samples, fits, strict=True):
        out[i] = Ranking(len(p.x), tuple(f[name] for name in families))
    return [r for r in out if r is not None]


def rank(
    x: np.ndarray,
    families: tuple[str, ...],
    subsample: int = 4000,
    seed: int = 0,
    method: str = "engine",
) -> Ranking:
    """Fit every family to one sample and keep all criteria, so any can rank later.

    ``method="engine"`` (default) uses the fast engine on the whole sample (``subsample``
    only seeds the start of families without a numpy density); ``"scipy"`` is the study's
    generic fit on a ``subsample``-value subsample, scored on all values. Raises
    FamilyError for unknown names, ValueError for NaN/inf or too few values, and
    DegenerateSampleError for a (near-)constant sample.
    """
    if method == "engine":
        result = rank_many([x], families, subsample, seed)[0]
        if isinstance(result, ValueError):
            raise result
        return result
    if method != "scipy":
        raise ValueError(f"unknown fitting method {method!r}; use 'engine' or 'scipy'")
    check_names(families)
    x = validated(x)
    compress(x)  # refuses degenerate samples, as the engine does
    fit_on = deterministic_subsample(x, subsample, seed)
    return Ranking(len(x), tuple(fit_family(name, x, fit_on) for name in families))
