"""Anomaly detection with per-projection mixtures: Gaussian against heavy-tailed components.

A detector here is a product of independent 1-D K-component mixtures, one per projection
(top PCA directions of the training residuals); a sentence's anomaly score is its negative
log-likelihood. The Gaussian, logistic and Student-t (fixed degrees of freedom) mixtures have
the same parameters per projection (K - 1 free weights, K locations, K scales), so a
comparison between them is at equal parameter count.

All three families are scale mixtures of normals, so one EM serves them: each point gets a
weight omega(z) (1 for the Gaussian, (nu + 1) / (nu + z^2) for t, tanh(z/2) / (z/2) for the
logistic) and the M-step is a weighted mean and variance. For t this is the classical EM;
for the logistic it is a minorize-maximize step from the tangent bound of log cosh(sqrt(t))
(concave in t), so the training likelihood never decreases in either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from harness.stats.errors import InsufficientDataError

FAMILIES = ("gaussian", "logistic", "t")
# Each family's standard deviation per unit scale: the initial scales match one variance.
_SD_PER_SCALE = {"gaussian": 1.0, "logistic": np.pi / np.sqrt(3.0)}
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class Mixture:
    """K-component 1-D mixtures of one family, one per projection (arrays are (m, K))."""

    family: str
    weights: np.ndarray
    locs: np.ndarray
    scales: np.ndarray
    df: float  # t's degrees of freedom (fixed, not fitted); unused by the other families
    n_iter: int  # EM iterations run by the slowest column
    train_loglik: float  # mean log-likelihood per training row (summed over projections)
    capped: int = 0  # columns that used the whole iteration budget without converging

    @property
    def n_parameters(self) -> int:
        m, k = self.weights.shape
        return m * (3 * k - 1)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log-density of each row of ``x`` (n, m): the sum over projections."""
        x = _as_rows(x, self.weights.shape[0])
        z = _standardized(x, self.locs, self.scales)
        joint = _log_joint(z, self.family, self.weights, self.scales, self.df)
        return _logsumexp_last(joint).sum(axis=1)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score of each row: its negative log-likelihood (higher = more anomalous)."""
        return -self.logpdf(x)


def _as_rows(x: np.ndarray, m: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or (m is not None and x.shape[1] != m):
        want = f"(n, {m})" if m is not None else "(n, m)"
        raise ValueError(f"expected a {want} array of projections, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the data contain NaN or infinite values")
    return x


def _logsumexp_last(a: np.ndarray) -> np.ndarray:
    """log(sum(exp(a), axis=-1)) for finite ``a``, the K terms summed left to right.

    Why by hand: numpy's reductions over a last axis of 3 components cost ~20x the
    elementwise form (a third of a fit's time), and scipy's logsumexp adds input checks.
    For K < 8 the result is bit for bit numpy's ``max`` and ``sum`` (which add fewer than 8
    terms in order), so fits are unchanged (tested)."""
    k = a.shape[-1]
    top = a[..., 0]
    for j in range(1, k):
        top = np.maximum(top, a[..., j])
    terms = np.exp(a - top[..., None])
    total = terms[..., 0]
    for j in range(1, k):
        total = total + terms[..., j]
    return top + np.log(total)


def _log_standard(z: np.ndarray, family: str, df: float) -> np.ndarray:
    if family == "gaussian":
        return -0.5 * z * z - 0.5 * _LOG_2PI
    if family == "logistic":
        # log(1 / (4 cosh^2(z/2))), stable for large |z|
        return -2.0 * np.logaddexp(0.5 * z, -0.5 * z)
    const = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * np.pi)
    return const - (df + 1) / 2 * np.log1p(z * z / df)


def _omega(z: np.ndarray, family: str, df: float) -> np.ndarray:
    """Per-point weight of the M-step (the scale-mixture-of-normals latent precision)."""
    if family == "gaussian":
        return np.ones_like(z)
    if family == "logistic":
        u = 0.5 * np.abs(z)
        small = u < 1e-6
        return np.where(small, 1.0, np.tanh(u) / np.where(small, 1.0, u))
    return (df + 1) / (df + z * z)


def _standardized(x: np.ndarray, mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    return (x[:, :, None] - mu[None]) / s[None]


def _log_joint(z: np.ndarray, family: str, w: np.ndarray, s: np.ndarray, df: float) -> np.ndarray:
    """log(w_k f((x - mu_k) / s_k) / s_k) from the standardized values ``z`` (n, m, K)."""
    return _log_standard(z, family, df) - np.log(s)[None] + np.log(w)[None]


def fit_mixture(
    x: np.ndarray,
    family: str,
    k: int = 3,
    n_iter: int = 2000,
    df: float = 3.0,
    tol: float = 1e-6,
    start: np.random.Generator | None = None,
) -> Mixture:
    """Fit one K-component mixture per column of ``x`` (n, m) by EM, all columns at once.

    Start: equal weights, scales giving each component a standard deviation of sd / K,
    locations at the (j + 0.5) / K quantiles of each column, or with ``start`` at a random
    quantile within each of the K strata (j + u) / K (a different start per refit).

    Each column runs until its mean training log-likelihood per row improves by less than
    ``tol`` nats in one iteration, or ``n_iter`` iterations (``capped`` counts the columns
    that hit that budget). Why per column and not on the sum: the sum over many columns
    stops when the fast ones have converged and leaves the slow ones short, and the slow
    ones are not the same for every family (a 3-component EM on overlapping components can
    need thousands of iterations), so a shared stop would compare unequally converged fits.
    Scales are floored at 1e-3 sd of their column so a component cannot collapse onto a
    single value.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if k < 1 or n_iter < 1:
        raise ValueError(f"k and n_iter must be >= 1, got k={k}, n_iter={n_iter}")
    if family == "t" and not df > 0:
        raise ValueError(f"t needs df > 0, got {df}")
    x = _as_rows(x)
    n, m = x.shape
    if n < 2 * k:
        raise InsufficientDataError(
            f"{n} rows are too few for a {k}-component mixture (need {2 * k})"
        )
    sd = x.std(axis=0)
    if np.any(sd <= 0):
        raise InsufficientDataError("a column of the data is constant; its mixture is undefined")
    per_scale = _SD_PER_SCALE.get(family, np.sqrt(df / (df - 2)) if df > 2 else 1.0)
    offsets = np.full((m, k), 0.5) if start is None else start.uniform(size=(m, k))
    levels = (np.arange(k)[None] + offsets) / k
    mu = np.stack([np.quantile(x[:, j], levels[j]) for j in range(m)])  # (m, k)
    s = np.repeat((sd / k / per_scale)[:, None], k, axis=1)
    w = np.full((m, k), 1.0 / k)
    floor = 1e-3 * sd[:, None]
    # The t and logistic scale updates divide by c * N_k with c = 1 and 2 (see module doc).
    c = 2.0 if family == "logistic" else 1.0
    previous = np.full(m, -np.inf)
    runs = np.zeros(m, dtype=int)
    active = np.arange(m)
    while active.size:
        xa = x[:, active]
        z = _standardized(xa, mu[active], s[active])
        joint = _log_joint(z, family, w[active], s[active], df)
        ll = _logsumexp_last(joint)
        current = ll.mean(axis=0)
        going = (current - previous[active] >= tol) & (runs[active] < n_iter)
        previous[active] = current
        if not going.all():
            active, xa, joint, ll = active[going], xa[:, going], joint[:, going], ll[:, going]
            z = z[:, going]
            if not active.size:
                break
        runs[active] += 1
        r = np.exp(joint - ll[:, :, None])  # responsibilities (n, m_active, k)
        rw = r * _omega(z, family, df)
        nk = np.maximum(r.sum(axis=0), 1e-300)
        w[active] = np.maximum(nk / n, 1e-300)
        mu[active] = (rw * xa[:, :, None]).sum(axis=0) / np.maximum(rw.sum(axis=0), 1e-300)
        dev = xa[:, :, None] - mu[active][None]
        s[active] = np.maximum(np.sqrt((rw * dev * dev).sum(axis=0) / (c * nk)), floor[active])
    final = float(_logsumexp_last(_log_joint(_standardized(x, mu, s), family, w, s, df)).sum() / n)
    capped = int(np.sum(runs >= n_iter))
    return Mixture(family, w, mu, s, float(df), int(runs.max()), final, capped)


@dataclass(frozen=True)
class Projection:
    """Centring and top-m principal directions of training rows, each scaled to unit sd."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (m, d), orthonormal rows
    sd: np.ndarray  # (m,)
    explained: float  # share of the training variance the m directions carry

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return (x - self.mean) @ self.components.T / self.sd


def pca_projection(train: np.ndarray, m: int | None = None, rel_tol: float = 1e-5) -> Projection:
    """The top-``m`` principal directions of ``train`` (n, d) by SVD of the centred rows;
    ``m=None``: every direction whose sd exceeds ``rel_tol`` x the largest (directions the
    training rows do not vary along, such as the all-ones direction that centred writing
    weights remove, would turn float rounding into huge scores)."""
    train = np.asarray(train, dtype=np.float64)
    if train.ndim != 2:
        raise ValueError(f"expected an (n, d) array, got shape {train.shape}")
    n = train.shape[0]
    mean = train.mean(axis=0)
    _, sv, vt = np.linalg.svd(train - mean, full_matrices=False)
    sd_all = sv / np.sqrt(max(n - 1, 1))
    spanned = int(np.sum(sd_all > rel_tol * sd_all[0])) if sd_all.size and sd_all[0] > 0 else 0
    if m is None:
        m = spanned
    if not 1 <= m <= spanned:
        raise InsufficientDataError(
            f"m={m} projections, but the {n} training rows span {spanned} directions"
        )
    total = float((sv**2).sum())
    return Projection(mean, vt[:m], sd_all[:m], float((sv[:m] ** 2).sum() / total))


def split_projection(
    rotation_rows: np.ndarray,
    scale_rows: np.ndarray,
    rel_tol: float = 1e-5,
    rest: bool = True,
) -> Projection:
    """Principal directions from ``rotation_rows`` (the ones those rows span, by decreasing
    variance), then the principal directions of ``scale_rows`` in the rest of the space;
    centred and scaled on ``scale_rows``.

    Why two sets of rows: the smallest principal directions of a sample are the ones along
    which that sample happens to vary least, so their variance measured on it is too small
    (with fewer rows than dimensions, zero) and held-out rows look extreme along them. Scales
    measured on rows that did not choose the directions are unbiased.

    Why the rest comes from ``scale_rows``: with fewer rotation rows than dimensions, their
    SVD's completion of the basis is arbitrary (any orthonormal basis of the complement), and
    a product of per-direction densities depends on the basis, so a float-rounding change in
    the activations moved SmolLM2's AUROC difference by a whole interval width. The scale
    rows' own principal directions there are fixed by the data (at the cost of the bias
    above within that complement). Directions along which ``scale_rows`` do not vary (sd
    below ``rel_tol`` x the largest) are dropped. ``rest=False`` leaves the rest of the
    space out altogether, so that no direction's scale comes from the rows that chose it.
    """
    a = np.asarray(rotation_rows, dtype=np.float64)
    b = np.asarray(scale_rows, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (n, d) arrays with the same d, got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise InsufficientDataError(
            f"principal directions need >= 2 rows each; got {len(a)} and {len(b)} training rows"
        )
    _, sv, vt = np.linalg.svd(a - a.mean(axis=0), full_matrices=False)
    span = vt[sv > rel_tol * sv[0]] if sv[0] > 0 else vt[:0]
    mean = b.mean(axis=0)
    centred = b - mean
    along_span = centred @ span.T
    if rest:
        _, rest_sv, rest_vt = np.linalg.svd(centred - along_span @ span, full_matrices=False)
    else:
        rest_sv, rest_vt = np.zeros(0), np.zeros((0, centred.shape[1]))
    # The rest's sd along its own directions; its rows of rank beyond the rest's are rounding
    # noise (~1e-16 of the largest sd) that may point anywhere, the span included, and the
    # filter below drops them.
    sd = np.concatenate([along_span.std(axis=0, ddof=1), rest_sv / np.sqrt(len(b) - 1)])
    basis = np.vstack([span, rest_vt])
    keep = sd > rel_tol * sd.max() if sd.max() > 0 else np.zeros(sd.size, bool)
    if not keep.any():
        raise InsufficientDataError("the scale rows do not vary along any direction")
    top = min(16, int(keep.sum()))
    explained = float((sd[keep][:top] ** 2).sum() / (sd[keep] ** 2).sum())
    return Projection(mean, basis[keep], sd[keep], explained)


@dataclass(frozen=True)
class Detector:
    """A density on all the directions training rows span: a K-component mixture on each
    of the top ``head`` directions and one component of the same family on each other
    direction. Every family gets the same parameter count."""

    projection: Projection
    head: Mixture
    tail: Mixture | None  # None when the head covers every direction

    @property
    def family(self) -> str:
        return self.head.family

    @property
    def n_parameters(self) -> int:
        return self.head.n_parameters + (self.tail.n_parameters if self.tail else 0)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log-density of each row of ``x`` (n, d) in the whitened directions' coordinates
        (the projection's Jacobian is common to all families, so it is left out)."""
        z = self.projection.transform(x)
        m = self.head.weights.shape[0]
        out = self.head.logpdf(z[:, :m])
        return out + self.tail.logpdf(z[:, m:]) if self.tail is not None else out

    def score(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score of each row: its negative log-likelihood."""
        return -self.logpdf(x)


def fit_detector(
    train: np.ndarray,
    family: str,
    head: int = 16,
    k: int = 3,
    n_iter: int = 2000,
    df: float = 3.0,
    projection: Projection | None = None,
    tol: float = 1e-6,
    start: np.random.Generator | None = None,
) -> Detector:
    """Fit a Detector on ``train`` (n, d); pass ``projection`` to share one PCA between
    families. Why all directions and not only the top ones: an input unlike the training
    text can sit near the centre of the top directions (they encode the training text's own
    variation) and far out in the small ones, and a density on the top directions alone
    then scores it as typical."""
    projection = projection if projection is not None else pca_projection(train, None)
    z = projection.transform(train)
    m = min(head, z.shape[1])
    head_fit = fit_mixture(z[:, :m], family, k, n_iter, df, tol, start)
    tail_fit = fit_mixture(z[:, m:], family, 1, n_iter, df, tol) if z.shape[1] > m else None
    return Detector(projection, head_fit, tail_fit)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half: the
    Mann-Whitney U divided by n_pos * n_neg."""
    u = pair_u(positive, np.zeros(len(positive), int), negative, np.zeros(len(negative), int))
    return float(u[0, 0] / (len(positive) * len(negative)))


def pair_u(
    positive: np.ndarray,
    positive_groups: np.ndarray,
    negative: np.ndarray,
    negative_groups: np.ndarray,
) -> np.ndarray:
    """Mann-Whitney counts between groups: U[p, q] = number of (i in positive group p,
    j in negative group q) with positive_i > negative_j, ties one half.

    The AUROC of any reweighting of the groups (a cluster bootstrap) is then a bilinear form
    in the group weights (``weighted_auroc``), with no re-ranking per resample.
    """
    positive = np.asarray(positive, dtype=np.float64)
    negative = np.asarray(negative, dtype=np.float64)
    pg = np.asarray(positive_groups, dtype=int)
    ng = np.asarray(negative_groups, dtype=int)
    if positive.size == 0 or negative.size == 0:
        raise InsufficientDataError("AUROC needs at least one positive and one negative score")
    if pg.shape != positive.shape or ng.shape != negative.shape or pg.min() < 0 or ng.min() < 0:
        raise ValueError("group labels must be non-negative ints, one per score")
    if not (np.all(np.isfinite(positive)) and np.all(np.isfinite(negative))):
        raise ValueError("scores must be finite")
    n_p, n_q = int(pg.max()) + 1, int(ng.max()) + 1
    u = np.zeros((n_p, n_q))
    for q in range(n_q):
        values = np.sort(negative[ng == q])
        if values.size == 0:
            continue
        below = np.searchsorted(values, positive, side="left")
        at_or_below = np.searchsorted(values, positive, side="right")
        u[:, q] = np.bincount(pg, weights=below + 0.5 * (at_or_below - below), minlength=n_p)
    return u


def weighted_auroc(
    u: np.ndarray,
    positive_sizes: np.ndarray,
    negative_sizes: np.ndarray,
    positive_weights: np.ndarray,
    negative_weights: np.ndarray,
) -> np.ndarray:
    """AUROC with each group counted ``weight`` times: rows of the weight arrays (B, groups)
    are resamples, and the result has one AUROC per row."""
    wp = np.atleast_2d(np.asarray(positive_weights, dtype=np.float64))
    wn = np.atleast_2d(np.asarray(negative_weights, dtype=np.float64))
    num = np.einsum("bp,pq,bq->b", wp, u, wn)
    den = (wp @ np.asarray(positive_sizes, float)) * (wn @ np.asarray(negative_sizes, float))
    # A resample that drew no positive (or no negative) group has no AUROC: NaN, not 0/0.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
