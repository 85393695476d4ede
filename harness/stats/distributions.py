"""Distribution families: registry, maximum-likelihood fits, validity checks and ranking."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# The study's code fits exactly these 19, in this order.
STUDY_FAMILIES: tuple[str, ...] = (
    "crystalball",
    "genlogistic",
    "gennorm",
    "hypsecant",
    "johnsonsb",
    "johnsonsu",
    "laplace",
    "laplace_asymmetric",
    "loggamma",
    "logistic",
    "norm",
    "norminvgauss",
    "pearson3",
    "powernorm",
    "skewnorm",
    "t",
    "truncnorm",
    "vonmises",
    "vonmises_line",
)
EXTRA_FAMILIES: tuple[str, ...] = (
    "cauchy",
    "nct",
    "burr12",
    "genextreme",
    "gumbel_r",
    "lognorm",
    "exponnorm",
    "dweibull",
)
FAMILIES: dict[str, stats.rv_continuous] = {
    name: getattr(stats, name) for name in STUDY_FAMILIES + EXTRA_FAMILIES
}
LOGISTIC_FAMILY = frozenset({"logistic", "genlogistic", "hypsecant"})
CORE_FAMILIES: tuple[str, ...] = ("norm", "logistic", "genlogistic", "hypsecant", "gennorm", "t")
SSE_BINS = 150
MIN_VALUES = 100


class FamilyError(ValueError):
    pass


def resolve_families(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Parse a family selection: names, or the sets ``study``, ``core``, ``all``."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    sets = {"study": STUDY_FAMILIES, "core": CORE_FAMILIES, "all": tuple(FAMILIES)}
    out: list[str] = []
    for name in names:
        for member in sets.get(name, (name,)):
            if member not in FAMILIES:
                raise FamilyError(
                    f"unknown distribution family {member!r}; valid names: "
                    f"{', '.join(FAMILIES)} (or the sets study, core, all)"
                )
            if member not in out:
                out.append(member)
    if not out:
        raise FamilyError("no distribution family selected")
    return tuple(out)


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


def deterministic_subsample(x: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    if size <= 0 or len(x) <= size:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), size=size, replace=False))]


def density_histogram(x: np.ndarray, bins: int = SSE_BINS) -> tuple[np.ndarray, np.ndarray]:
    heights, edges = np.histogram(x, bins=bins, density=True)
    return 0.5 * (edges[:-1] + edges[1:]), heights


def check_validity(dist: stats.rv_continuous, params: tuple[float, ...], x: np.ndarray) -> str:
    """Empty when the fitted density is a proper density on the data, else the reason.

    Periodic families (vonmises) evaluated on unbounded data can report likelihoods far
    above every real family; their pdf then integrates to far more than 1 over the data.
    """
    lo, hi = float(x.min()), float(x.max())
    grid = np.linspace(lo, hi, 4097)
    with np.errstate(all="ignore"):
        mass = float(np.trapezoid(dist.pdf(grid, *params), grid))
        inside = np.isfinite(dist.logpdf(np.array([lo, hi]), *params)).all()
    if not inside:
        return "data outside the fitted support"
    if not (0.9 <= mass <= 1.02):
        return f"density integrates to {mass:.3g} over the data's range"
    return ""


def fit_family(name: str, x: np.ndarray, fit_on: np.ndarray | None = None) -> FamilyFit:
    """Maximum likelihood with scipy's generic fit on ``fit_on``; scored on all of ``x``."""
    dist = FAMILIES[name]
    fit_on = x if fit_on is None else fit_on
    started = time.perf_counter()
    n = len(x)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            params = tuple(float(p) for p in dist.fit(fit_on))
            loglik = float(dist.logpdf(x, *params).sum())
    except Exception as exc:  # a family that fails is a recorded result, never a crash
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
            f"fit failed: {exc}",
        )
    k = len(params)
    converged = math.isfinite(loglik)
    reason = check_validity(dist, params, x) if converged else "non-finite log-likelihood"
    centers, heights = density_histogram(x)
    with np.errstate(all="ignore"):
        sse = float(np.sum((dist.pdf(centers, *params) - heights) ** 2))
    return FamilyFit(
        name=name,
        params=params,
        loglik=loglik,
        aic=2 * k - 2 * loglik,
        bic=k * math.log(n) - 2 * loglik,
        sse=sse if math.isfinite(sse) else math.inf,
        converged=converged,
        valid=not reason,
        seconds=time.perf_counter() - started,
        note=reason,
    )


def rank(x: np.ndarray, families: tuple[str, ...], subsample: int = 4000, seed: int = 0) -> Ranking:
    """Fit every family to one sample and keep all criteria, so any can rank later."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
        raise ValueError(f"sample has {int((~np.isfinite(x)).sum())} NaN/inf values")
    if len(x) < MIN_VALUES:
        raise ValueError(f"sample has {len(x)} values; at least {MIN_VALUES} are needed to fit")
    fit_on = deterministic_subsample(x, subsample, seed)
    return Ranking(len(x), tuple(fit_family(name, x, fit_on) for name in families))
