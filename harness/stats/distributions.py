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
    fit_engine,
    logpdf,
    sample_sum,
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


def _validity(
    density: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, extra: np.ndarray
) -> str:
    """Empty when the fitted density is a proper density on the data, else the reason.

    Periodic families (vonmises) evaluated on unbounded data can report likelihoods far
    above every real family; their pdf then integrates to far more than 1 over the data.
    The grid adds data-adaptive points so that a narrow core beside far outliers is still
    resolved.
    """
    grid = np.unique(
        np.concatenate([np.linspace(lo, hi, 4097), extra[(extra > lo) & (extra < hi)]])
    )
    with np.errstate(all="ignore"):
        log_ends = density(np.array([lo, hi]))
        mass = float(np.trapezoid(np.exp(density(grid)), grid))
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
    return _validity(lambda v: dist.logpdf(v, *params), lo, hi, extra)


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


def binned_loglik(name: str, params: Sequence[float], s: Compressed) -> float:
    """Log-likelihood of the whole sample from its bins (about 1e-9 per value from exact);
    the bins at the extremes and around ``loc`` (a kink for laplace-like families) are
    summed exactly."""
    around = s.bin_of(float(params[-2]))
    near = np.arange(around - 3, around + 4)
    exact = np.unique(np.clip(np.concatenate([[0, len(s.y) - 1], near]), 0, len(s.y) - 1))
    return sample_sum(lambda v: logpdf(name, v, params), s, exact)


def score(name: str, fit: EngineResult, s: Compressed, started: float) -> FamilyFit:
    """Log-likelihood, criteria and validity of engine parameters."""
    if not fit.params:
        return _failed(name, started, fit.note or "fit failed")
    params = tuple(float(p) for p in fit.params)
    loglik = fit.loglik if fit.loglik is not None else binned_loglik(name, params, s)

    def density(v: np.ndarray) -> np.ndarray:
        return logpdf(name, v, params)

    reason = _validity(density, s.lo, s.hi, s.edges) if math.isfinite(loglik) else ""
    with np.errstate(all="ignore"):
        sse = float(np.sum((np.exp(density(s.sse_centers)) - s.sse_heights) ** 2))
    return _assemble(name, params, loglik, s.n, fit.converged, reason, sse, started, fit.note)


def _fit_one(
    name: str,
    x: np.ndarray,
    s: Compressed,
    subsample: int,
    seed: int,
    start: Sequence[float] | None = None,
) -> FamilyFit:
    started = time.perf_counter()
    try:
        fit = fit_engine(name, s, x, subsample, seed, start)
    except Exception as exc:  # a family that fails is a recorded result, never a crash
        return _failed(name, started, f"fit failed: {type(exc).__name__}: {exc}")
    return score(name, fit, s, started)


def fit_fast(name: str, x: np.ndarray, subsample: int = 4000, seed: int = 0) -> FamilyFit:
    """One family by the engine; failures are recorded, never raised."""
    x = validated(x)
    return _fit_one(name, x, compress(x), subsample, seed)


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
    fits: dict[str, FamilyFit], x: np.ndarray, s: Compressed, subsample: int, seed: int
) -> dict[str, FamilyFit]:
    """Refit a wider family from the nested family's optimum when it ended below it (a
    local optimum), so that nested families tie at worst, as they must."""
    fits = dict(fits)
    for wide, narrow, embed in NESTED:
        if wide not in fits or narrow not in fits or not fits[narrow].params:
            continue
        if fits[wide].loglik >= fits[narrow].loglik - 1e-9 * s.n:
            continue
        refit = _fit_one(wide, x, s, subsample, seed, embed(fits[narrow].params))
        if refit.loglik > fits[wide].loglik:
            seconds = fits[wide].seconds + refit.seconds
            fits[wide] = dataclasses.replace(refit, seconds=seconds)
    return fits


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
    check_names(families)
    x = validated(x)
    s = compress(x)  # also refuses degenerate samples, whichever method fits
    if method == "scipy":
        fit_on = deterministic_subsample(x, subsample, seed)
        return Ranking(len(x), tuple(fit_family(name, x, fit_on) for name in families))
    if method != "engine":
        raise ValueError(f"unknown fitting method {method!r}; use 'engine' or 'scipy'")
    fits = {name: _fit_one(name, x, s, subsample, seed) for name in families}
    fits = _enforce_nesting(fits, x, s, subsample, seed)
    return Ranking(len(x), tuple(fits[name] for name in families))
