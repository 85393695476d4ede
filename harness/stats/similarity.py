"""Representation similarity: cell centroids, cosine distinctiveness, PCA, degeneracy checks.

Inputs are residual activations ``resid`` of shape (n_layers, n_sentences, d_model) and
per-sentence integer codes ``subject`` in [0, S) and ``attribute`` in [0, A); a *cell* is one
(subject, attribute) pair. Distinctiveness (the seed's analysis, as DESIGN.md defines it):

    D(s1, a1) = mean over s2 != s1, a2 != a1 of
                [cos(c(s1, a1), c(s1, a2)) - cos(c(s1, a1), c(s2, a1))]

with c the cell centroid; positive = the subject attracts. The double mean separates into a
mean over a2 of the first cosine minus a mean over s2 of the second, so it needs only each
cell's cosines with its own subject's cells (one A x A Gram matrix per subject) and with its
own attribute's cells (one S x S Gram per attribute): batched matmuls, no pairwise loop.

Variants: ``raw`` (centroids of the residual vectors as they are), ``pca`` (PCA fitted per layer
on all sentences, centred, keeping components until the explained variance exceeds the
threshold, as scikit-learn's ``PCA(n_components=0.9)`` does) and ``standardized`` (per-layer
z-scoring of each dimension). Both non-raw variants centre on the layer's mean sentence, the
raw one does not, so they differ by more than the scaling.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from harness.stats.errors import InsufficientDataError

Variant = Literal["raw", "pca", "standardized"]
VARIANTS: tuple[str, ...] = ("raw", "pca", "standardized")
# How bootstrap replicates become an interval. "basic" (2 * estimate - quantiles) is the
# default because mean |D| is biased by within-cell noise and every resample adds that noise
# once more: percentile intervals then sit beside the truth, on the "shrinks" side whenever
# the noise grows with depth (tests/test_similarity.py::
# test_basic_interval_does_not_double_the_noise_bias measures both).
Interval = Literal["basic", "percentile"]
INTERVALS: tuple[str, ...] = ("basic", "percentile")

# D lies in [-2, 2], so an absolute tolerance says "numerically constant" at any scale.
CONSTANT_TOL = 1e-9
# Dimensions whose spread is below this fraction of the largest are constant to float32
# precision; z-scoring them would amplify rounding noise into unit-variance signal.
_CONSTANT_DIM_REL = 1e-6
# Bootstrap centroids are materialized per chunk of resamples: ~4M float32 values (16 MB).
_CHUNK_VALUES = 2**22
# Resampling weights are drawn in fixed blocks so results depend on the seed only.
_DRAW_BLOCK = 256


def _readonly(a: np.ndarray) -> np.ndarray:
    # The dataclasses are frozen; their arrays should be too, or "frozen" is only nominal.
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True, eq=False)
class _Cells:
    n_subjects: int
    n_attributes: int
    counts: np.ndarray  # (K,) sentences per cell, K = S * A, cell k = s * A + a
    pad: np.ndarray  # (K, m_max) sentence indices of each cell, -1 where the cell is shorter


def codes(labels: Iterable[Hashable]) -> tuple[np.ndarray, list[Hashable]]:
    """Per-sentence integer codes (in order of first appearance) for this module's
    ``subject`` / ``attribute`` arguments, and the labels they stand for."""
    index, names = pd.factorize(pd.Series(list(labels)))
    return index, list(names)


def _cells(
    subject: np.ndarray,
    attribute: np.ndarray,
    n_subjects: int | None,
    n_attributes: int | None,
    n_sentences: int,
) -> _Cells:
    subject = np.asarray(subject)
    attribute = np.asarray(attribute)
    if subject.shape != (n_sentences,) or attribute.shape != (n_sentences,):
        raise ValueError(
            f"subject and attribute must be 1-D with one code per sentence ({n_sentences}); "
            f"got {subject.shape} and {attribute.shape}"
        )
    if not all(np.issubdtype(codes.dtype, np.integer) for codes in (subject, attribute)):
        raise ValueError("subject and attribute must be integer codes")
    S = int(subject.max()) + 1 if n_subjects is None else n_subjects
    A = int(attribute.max()) + 1 if n_attributes is None else n_attributes
    if S < 2 or A < 2:
        raise InsufficientDataError(
            f"distinctiveness needs >= 2 subjects and >= 2 attributes, got {S}x{A}"
        )
    if subject.min() < 0 or subject.max() >= S or attribute.min() < 0 or attribute.max() >= A:
        raise ValueError(f"codes out of range for {S} subjects x {A} attributes")
    cell = subject.astype(np.int64) * A + attribute.astype(np.int64)
    counts = np.bincount(cell, minlength=S * A)
    if (counts == 0).any():
        empty = [(int(k) // A, int(k) % A) for k in np.flatnonzero(counts == 0)]
        raise InsufficientDataError(
            f"every (subject, attribute) cell needs a sentence; empty: {empty[:10]}"
        )
    order = np.argsort(cell, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(n_sentences) - np.repeat(starts, counts)
    pad = np.full((S * A, int(counts.max())), -1, dtype=np.int64)
    pad[cell[order], slot] = order
    return _Cells(S, A, counts, pad)


def _padded(values: np.ndarray, cells: _Cells) -> np.ndarray:
    """(n, d) -> (K, m_max, d); index -1 picks the appended zero row, so padding adds nothing."""
    ext = np.concatenate([values, np.zeros((1, values.shape[1]), values.dtype)])
    return ext[cells.pad]


def _cell_means(values: np.ndarray, cells: _Cells) -> np.ndarray:
    sums = _padded(values, cells).sum(axis=1, dtype=np.float64)
    return (sums / cells.counts[:, None]).reshape(cells.n_subjects, cells.n_attributes, -1)


def _noise_free_moments(values: np.ndarray, cells: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """(S, A, d) centroids and (S, A) unbiased estimates of each cell's squared mean-vector
    norm |mu|^2, from one padded copy of the values.

    A centroid's squared norm is |mu|^2 plus tr(Sigma) / n: its sentences' noise lengthens it,
    and more so in small cells. The U-statistic (sum over i != j of x_i . x_j) / (n (n - 1))
    = |c|^2 - (mean |x_i|^2 - |c|^2) / (n - 1) removes that term exactly in expectation.
    Needs n >= 2 in every cell.
    """
    n = cells.counts.reshape(cells.n_subjects, cells.n_attributes).astype(np.float64)
    if (n < 2).any():
        raise InsufficientDataError("a noise-free centroid norm needs >= 2 sentences per cell")
    padded = _padded(values, cells)
    sums = padded.sum(axis=1, dtype=np.float64)
    centroids = (sums / cells.counts[:, None]).reshape(cells.n_subjects, cells.n_attributes, -1)
    m2 = np.einsum("kmd,kmd->k", padded, padded, dtype=np.float64).reshape(n.shape) / n
    c2 = np.einsum("sad,sad->sa", centroids, centroids)
    return centroids, c2 - (m2 - c2) / (n - 1)


def centroids(
    resid_layer: np.ndarray,
    subject: np.ndarray,
    attribute: np.ndarray,
    n_subjects: int,
    n_attributes: int,
) -> np.ndarray:
    """Mean vector of each (subject, attribute) cell at one layer: (S, A, d), float64."""
    x = np.asarray(resid_layer)
    if x.ndim != 2:
        raise ValueError(f"resid_layer must be (n_sentences, d_model), got shape {x.shape}")
    cells = _cells(subject, attribute, n_subjects, n_attributes, x.shape[0])
    return _cell_means(x, cells)


# ------------------------------------------------------------------ distinctiveness core


def _cosines(gram: np.ndarray, norms2: np.ndarray | None = None) -> np.ndarray:
    """Cosine matrices from Gram matrices (..., n, n), in float64, self-cosines set to 0.

    ``norms2`` (..., n) replaces the Gram's diagonal as the squared norms (noise-free
    estimates). A zero vector, or one whose estimated squared norm is not positive, has no
    direction: its cosines count as 0, so it neither attracts nor repels.
    """
    gram = gram.astype(np.float64, copy=False)
    diagonal = np.diagonal(gram, axis1=-2, axis2=-1) if norms2 is None else norms2
    norm = np.sqrt(np.clip(diagonal, 0.0, None))
    outer = norm[..., :, None] * norm[..., None, :]
    cos = np.divide(gram, outer, out=np.zeros(gram.shape), where=outer > 0)
    if norms2 is not None:
        # Estimated norms can fall short of the dot products they divide: a cosine cannot.
        np.clip(cos, -1.0, 1.0, out=cos)
    n = cos.shape[-1]
    cos[..., np.arange(n), np.arange(n)] = 0.0  # set, not subtracted: no 1 - 1 cancellation
    return cos


def _distinctiveness(c: np.ndarray, norms2: np.ndarray | None = None) -> np.ndarray:
    """D from centroids (..., S, A, d), with the Gram matrices in c's own float precision;
    ``norms2`` (..., S, A), if given, are the squared norms the cosines divide by."""
    S, A = c.shape[-3], c.shape[-2]
    if S < 2 or A < 2:
        raise InsufficientDataError(
            f"distinctiveness needs >= 2 subjects and >= 2 attributes, got {S}x{A}"
        )
    # Only same-subject and same-attribute pairs enter D: S Gram matrices of A x A and A of
    # S x S, O(S A (S + A) d) as batched matmuls, with no normalized copy of the centroids.
    same_subject = _cosines(c @ np.swapaxes(c, -1, -2), norms2)  # (..., S, A, A)
    by_attribute = np.swapaxes(c, -3, -2)  # (..., A, S, d)
    same_attribute = _cosines(
        by_attribute @ np.swapaxes(by_attribute, -1, -2),
        None if norms2 is None else np.swapaxes(norms2, -1, -2),
    )  # (..., A, S, S)
    subject_pull = same_subject.sum(axis=-1) / (A - 1)  # (..., S, A)
    attribute_pull = np.swapaxes(same_attribute.sum(axis=-1), -1, -2) / (S - 1)  # (..., S, A)
    return subject_pull - attribute_pull


def distinctiveness_from_centroids(c: np.ndarray, norms2: np.ndarray | None = None) -> np.ndarray:
    """D for every cell from centroids of shape (..., S, A, d); returns (..., S, A).

    Vectorized over any leading axes (layers, bootstrap resamples); computed in float64.
    ``norms2``: noise-free squared norms to divide by instead of the centroids' own.
    """
    return _distinctiveness(np.asarray(c, dtype=np.float64), norms2)


# ------------------------------------------------------------------ per-layer transforms


@dataclass(frozen=True, eq=False)
class _LayerFit:
    """The variant's affine map x -> (x - mean) @ basis (pca) or (x - mean) * scale
    (standardized), identity for raw, plus the layer's degeneracy diagnostics."""

    mean: np.ndarray | None
    basis: np.ndarray | None
    scale: np.ndarray | None
    dims: int  # dimension of the transformed space
    components_kept: int
    top_pc_share: float
    top_dim_share: float
    top_dim_energy_share: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            return x
        z = x - self.mean.astype(x.dtype)
        if self.basis is not None:
            return z @ self.basis.astype(x.dtype)
        assert self.scale is not None
        return z * self.scale.astype(x.dtype)


def _components_for(eigenvalues_desc: np.ndarray, threshold: float) -> int:
    total = eigenvalues_desc.sum()
    if total <= 0:
        return 0
    cum = np.cumsum(eigenvalues_desc) / total
    # scikit-learn's rule: the smallest k whose cumulative share strictly exceeds threshold.
    k = int(np.searchsorted(cum, threshold, side="right")) + 1
    return min(k, int(np.count_nonzero(eigenvalues_desc > 0)))


def _fit_layer(x: np.ndarray, variant: str, threshold: float) -> _LayerFit:
    """Fit the variant's transform on one layer's sentences (n, d) and measure degeneracy.

    The PCA diagnostics are computed for every variant: whether a layer is dominated by one
    direction is a property of the data that a raw-variant verdict must also see.
    """
    x32 = np.asarray(x, dtype=np.float32)
    mean = x32.mean(axis=0, dtype=np.float64)
    centred = x32 - mean.astype(np.float32)
    var = np.einsum("nd,nd->d", centred, centred, dtype=np.float64) / len(x32)
    energy = np.einsum("nd,nd->d", x32, x32, dtype=np.float64) / len(x32)
    # float32 Gram (BLAS syrk speed), float64 eigensolver: shares to ~1e-6, ample for a 90 % cut.
    cov = (centred.T @ centred).astype(np.float64) / max(len(x32) - 1, 1)
    if variant == "pca":
        eigval, eigvec = np.linalg.eigh(cov)
    else:
        eigval, eigvec = np.linalg.eigvalsh(cov), None
    eigval = np.clip(eigval[::-1], 0.0, None)
    k = _components_for(eigval, threshold)
    total_var, total_energy = float(var.sum()), float(energy.sum())
    diag: dict[str, Any] = {
        "components_kept": k,
        "top_pc_share": float(eigval[0] / eigval.sum()) if eigval.sum() > 0 else float("nan"),
        "top_dim_share": float(var.max() / total_var) if total_var > 0 else float("nan"),
        "top_dim_energy_share": (
            float(energy.max() / total_energy) if total_energy > 0 else float("nan")
        ),
    }
    if variant == "raw":
        return _LayerFit(None, None, None, x32.shape[1], **diag)
    if variant == "pca":
        assert eigvec is not None
        return _LayerFit(mean, eigvec[:, ::-1][:, :k], None, k, **diag)
    sd = np.sqrt(var)
    keep = sd > _CONSTANT_DIM_REL * sd.max() if sd.max() > 0 else np.zeros_like(sd, bool)
    scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=keep)
    return _LayerFit(mean, None, scale, int(keep.sum()), **diag)


def _check_inputs(resid: np.ndarray, variant: str, variance_threshold: float) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not 0 < variance_threshold <= 1:
        raise ValueError(f"variance_threshold must be in (0, 1], got {variance_threshold}")
    if np.ndim(resid) != 3:
        raise ValueError(f"resid must be (n_layers, n_sentences, d_model), got {np.shape(resid)}")


# ------------------------------------------------------------------ point estimate


@dataclass(frozen=True, eq=False)
class DistinctivenessResult:
    """D per layer and cell for one variant, with what is needed to know when not to trust it.

    ``degenerate`` marks layers where D carries no cell-to-cell information: the PCA variant
    kept a single component (every reduced centroid is a signed scalar, so every cosine is
    +-1), or D is numerically constant across cells. The PCA diagnostics are measured for every
    variant; ``top_dim_energy_share`` (share of the uncentred mean square in one dimension) is
    what drives raw cosines towards 1 when a massive dimension carries a large offset.
    """

    variant: str
    D: np.ndarray  # (L, S, A)
    mean_abs: np.ndarray  # (L,) mean |D| over cells: the claim statistic
    spread: np.ndarray  # (L,) max - min of D over cells
    degenerate: np.ndarray  # (L,) bool
    components_kept: np.ndarray  # (L,) PCA components reaching variance_threshold
    top_pc_share: np.ndarray  # (L,) variance share of the first principal component
    top_dim_share: np.ndarray  # (L,) variance share of the single largest raw dimension
    top_dim_energy_share: np.ndarray  # (L,) mean-square share of the largest raw dimension
    dims_used: np.ndarray  # (L,) dimension of the space the cosines were taken in
    variance_threshold: float

    @property
    def n_layers(self) -> int:
        return self.D.shape[0]

    def degenerate_reasons(self) -> list[str]:
        out = []
        for layer in range(self.n_layers):
            why = []
            if self.variant == "pca" and self.components_kept[layer] <= 1:
                why.append(f"PCA-{self.variance_threshold:.0%} kept {self.components_kept[layer]}")
            if self.spread[layer] <= CONSTANT_TOL:
                why.append("D constant across cells")
            out.append("; ".join(why))
        return out

    def table(self) -> pd.DataFrame:
        """One row per layer."""
        L = self.n_layers
        return pd.DataFrame(
            {
                "layer": np.arange(L),
                "depth": _depth(L),
                "variant": self.variant,
                "mean_abs_D": self.mean_abs,
                "spread": self.spread,
                "degenerate": self.degenerate,
                "reason": self.degenerate_reasons(),
                "components_kept": self.components_kept,
                "top_pc_share": self.top_pc_share,
                "top_dim_share": self.top_dim_share,
                "top_dim_energy_share": self.top_dim_energy_share,
                "dims_used": self.dims_used,
            }
        )

    def cells(self) -> pd.DataFrame:
        """Long format: one row per (layer, subject, attribute)."""
        L, S, A = self.D.shape
        layer, subject, attribute = np.meshgrid(
            np.arange(L), np.arange(S), np.arange(A), indexing="ij"
        )
        return pd.DataFrame(
            {
                "layer": layer.ravel(),
                "subject": subject.ravel(),
                "attribute": attribute.ravel(),
                "D": self.D.ravel(),
            }
        )


def _depth(n_layers: int) -> np.ndarray:
    return np.arange(n_layers) / max(n_layers - 1, 1)


def _result(
    variant: str, D: np.ndarray, fits: list[_LayerFit], threshold: float
) -> DistinctivenessResult:
    flat = D.reshape(D.shape[0], -1)
    spread = flat.max(axis=1) - flat.min(axis=1)
    kept = np.array([f.components_kept for f in fits])
    degenerate = spread <= CONSTANT_TOL
    if variant == "pca":
        degenerate |= kept <= 1
    return DistinctivenessResult(
        variant=variant,
        D=_readonly(D),
        mean_abs=_readonly(np.abs(flat).mean(axis=1)),
        spread=_readonly(spread),
        degenerate=_readonly(degenerate),
        components_kept=_readonly(kept),
        top_pc_share=_readonly(np.array([f.top_pc_share for f in fits])),
        top_dim_share=_readonly(np.array([f.top_dim_share for f in fits])),
        top_dim_energy_share=_readonly(np.array([f.top_dim_energy_share for f in fits])),
        dims_used=_readonly(np.array([f.dims for f in fits])),
        variance_threshold=threshold,
    )


def distinctiveness(
    resid: np.ndarray,
    subject: np.ndarray,
    attribute: np.ndarray,
    variant: Variant = "raw",
    *,
    variance_threshold: float = 0.9,
    n_subjects: int | None = None,
    n_attributes: int | None = None,
    noise_free: bool = False,
) -> DistinctivenessResult:
    """D (L, S, A) for one variant, with per-layer degeneracy diagnostics.

    ``noise_free``: the cosines divide by unbiased estimates of the cells' mean-vector norms
    (``_noise_free_moments``) instead of the centroids' own, which sentence noise lengthens by
    tr(Sigma) / n: D then no longer shrinks towards 0 as cells get smaller. (The numerators,
    dot products of distinct cells' centroids, carry independent noise and are unbiased.)
    Reads one layer at a time, so ``resid`` may be a memmap larger than memory.
    """
    _check_inputs(resid, variant, variance_threshold)
    cells = _cells(subject, attribute, n_subjects, n_attributes, resid.shape[1])
    fits, layers = [], []
    for layer in range(resid.shape[0]):
        x = np.asarray(resid[layer])
        fit = _fit_layer(x, variant, variance_threshold)
        if noise_free:
            c, norms2 = _noise_free_moments(fit.apply(np.asarray(x, dtype=np.float64)), cells)
            layers.append(distinctiveness_from_centroids(c, norms2))
        else:
            # The transforms are affine: transforming centroids equals centroids of transforms.
            layers.append(distinctiveness_from_centroids(fit.apply(_cell_means(x, cells))))
        fits.append(fit)
    return _result(variant, np.stack(layers), fits, variance_threshold)


# ------------------------------------------------------------------ bootstrap


def _pivot(estimate: np.ndarray | float, replicates: np.ndarray, interval: str) -> np.ndarray:
    """Replicates whose percentiles are the interval: as drawn (percentile) or reflected
    about the estimate (basic), which removes a bias the resamples share with the estimate."""
    if interval == "percentile":
        return replicates
    _check_interval(interval)
    return 2 * estimate - replicates


def _check_interval(interval: str) -> None:
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; choose one of {', '.join(INTERVALS)}")


def _interval(
    estimate: np.ndarray | float, replicates: np.ndarray, confidence: float, interval: str
) -> np.ndarray:
    """Two-sided interval along axis 0 of ``replicates``; output (..., 2) = (low, high)."""
    alpha = 1 - confidence
    pivots = _pivot(np.asarray(estimate), replicates, interval)
    lo, hi = np.nanquantile(pivots, [alpha / 2, 1 - alpha / 2], axis=0)
    return np.stack([lo, hi], axis=-1)


@dataclass(frozen=True, eq=False)
class DistinctivenessBootstrap:
    """Sentence bootstrap of D: sentences resampled with replacement within each cell, the
    same draw for every layer (so the layers' correlation is kept).

    The variant's per-layer transform (PCA basis, z-scoring) is fitted once on all sentences
    and held fixed: the intervals cover centroid noise, not the PCA basis' own noise.
    Within-cell noise biases D: it lengthens every centroid, pulling |cos| and so |D| towards
    0, and |.| of a noisy value pushes mean |D| up. Each resample adds that noise once more,
    so ``boot_mean`` differs from the estimate by about the bias; ``interval="basic"``
    corrects for it to first order, percentile intervals double it.
    """

    estimate: DistinctivenessResult
    replicates: np.ndarray  # (B, L, S, A) float32
    confidence: float
    seed: int
    interval: Interval
    mean_abs_replicates: np.ndarray = field(init=False)  # (B, L)
    mean_abs_ci: np.ndarray = field(init=False)  # (L, 2)
    cell_ci: np.ndarray = field(init=False)  # (L, S, A, 2)

    def __post_init__(self) -> None:
        B, L = self.replicates.shape[:2]
        mean_abs = np.abs(self.replicates.reshape(B, L, -1)).mean(axis=2, dtype=np.float64)
        object.__setattr__(self, "mean_abs_replicates", _readonly(mean_abs))
        est = self.estimate
        mean_abs_ci = _interval(est.mean_abs, mean_abs, self.confidence, self.interval)
        object.__setattr__(self, "mean_abs_ci", _readonly(mean_abs_ci))
        cell_ci = _interval(est.D, self.replicates, self.confidence, self.interval)
        object.__setattr__(self, "cell_ci", _readonly(cell_ci))

    @property
    def n_resamples(self) -> int:
        return self.replicates.shape[0]

    def trend(self, use: np.ndarray | None = None) -> TrendResult:
        """Depth trend of mean |D|; by default over the non-degenerate layers only."""
        if use is None:
            use = ~self.estimate.degenerate
        return depth_trend(
            self.estimate.mean_abs,
            self.mean_abs_replicates,
            confidence=self.confidence,
            interval=self.interval,
            use=use,
        )

    def table(self) -> pd.DataFrame:
        """The estimate's per-layer table with the mean |D| interval."""
        out = self.estimate.table()
        out.insert(4, "ci_low", self.mean_abs_ci[:, 0])
        out.insert(5, "ci_high", self.mean_abs_ci[:, 1])
        out.insert(6, "boot_mean", self.mean_abs_replicates.mean(axis=0))
        return out

    def cells(self) -> pd.DataFrame:
        out = self.estimate.cells()
        out["ci_low"] = self.cell_ci[..., 0].ravel()
        out["ci_high"] = self.cell_ci[..., 1].ravel()
        return out


def _resample_weights(cells: _Cells, n_boot: int, seed: int) -> np.ndarray:
    """(K, B, m_max) float32: how often each cell member is drawn, over the cell's size.

    A weighted sum with these weights is the resampled cell mean, so a resample's centroids
    are one batched matmul of small (B, m) x (m, d) blocks instead of a gather per resample.
    """
    rng = np.random.default_rng(seed)
    K, m = cells.pad.shape
    counts = cells.counts
    valid = np.arange(m)[None, None, :] < counts[None, :, None]
    out = np.empty((K, n_boot, m), dtype=np.float32)
    for start in range(0, n_boot, _DRAW_BLOCK):
        b = min(_DRAW_BLOCK, n_boot - start)
        member = np.floor(rng.random((b, K, m)) * counts[None, :, None]).astype(np.int64)
        base = (np.arange(b)[:, None, None] * K + np.arange(K)[None, :, None]) * m
        drawn = (base + member)[np.broadcast_to(valid, member.shape)]
        hits = np.bincount(drawn, minlength=b * K * m)
        weights = hits.reshape(b, K, m) / counts[None, :, None]
        out[:, start : start + b] = weights.transpose(1, 0, 2)
    return out


def bootstrap_distinctiveness(
    resid: np.ndarray,
    subject: np.ndarray,
    attribute: np.ndarray,
    variant: Variant = "raw",
    n_boot: int = 1000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
    interval: Interval = "basic",
    variance_threshold: float = 0.9,
    n_subjects: int | None = None,
    n_attributes: int | None = None,
) -> DistinctivenessBootstrap:
    """Point estimate plus ``n_boot`` within-cell sentence resamples of D, in one pass over
    the layers (memmap-friendly). Cost ~ n_boot x n_sentences x dims per layer, in float32."""
    _check_inputs(resid, variant, variance_threshold)
    _check_interval(interval)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    cells = _cells(subject, attribute, n_subjects, n_attributes, resid.shape[1])
    S, A = cells.n_subjects, cells.n_attributes
    K = S * A
    weights = _resample_weights(cells, n_boot, seed)
    L = resid.shape[0]
    replicates = np.empty((n_boot, L, S, A), dtype=np.float32)
    fits, point = [], []
    for layer in range(L):
        x = np.asarray(resid[layer])
        fit = _fit_layer(x, variant, variance_threshold)
        fits.append(fit)
        point.append(distinctiveness_from_centroids(fit.apply(_cell_means(x, cells))))
        y = _padded(fit.apply(np.asarray(x, dtype=np.float32)), cells)  # (K, m, d')
        chunk = max(1, _CHUNK_VALUES // max(K * y.shape[2], 1))
        for start in range(0, n_boot, chunk):
            stop = min(start + chunk, n_boot)
            c = np.matmul(weights[:, start:stop], y)  # (K, b, d') resampled centroids
            c = c.transpose(1, 0, 2).reshape(stop - start, S, A, y.shape[2])
            # float32 Gram: ~1e-7 relative error on the cosines, well inside resampling noise.
            replicates[start:stop, layer] = _distinctiveness(c)
    estimate = _result(variant, np.stack(point), fits, variance_threshold)
    replicates.setflags(write=False)
    return DistinctivenessBootstrap(estimate, replicates, confidence, seed, interval)


# ------------------------------------------------------------------ depth trend


@dataclass(frozen=True)
class TrendResult:
    """Trend of a per-layer statistic against normalized depth layer / (L - 1).

    p-values are one-sided bootstrap tests in the claim's direction that invert the same
    interval: the share of pivoted resamples with slope >= 0, and with late/early ratio >= 1
    (``(1 + count) / (B + 1)``), so "CI entirely below" and "p < (1 - confidence) / 2" agree.
    """

    n_layers: int
    layers_used: tuple[int, ...]
    early_layers: tuple[int, ...]
    late_layers: tuple[int, ...]
    slope: float  # OLS slope of the statistic on normalized depth
    slope_ci: tuple[float, float]
    slope_pvalue: float
    rho: float  # Spearman correlation with depth
    rho_ci: tuple[float, float]
    ratio: float  # mean over the last third of layers / mean over the first third
    ratio_ci: tuple[float, float]
    ratio_pvalue: float
    confidence: float
    interval: str
    n_resamples: int

    def table(self) -> pd.DataFrame:
        rows = [
            ("slope", self.slope, *self.slope_ci, self.slope_pvalue),
            ("spearman_rho", self.rho, *self.rho_ci, float("nan")),
            ("late_early_ratio", self.ratio, *self.ratio_ci, self.ratio_pvalue),
        ]
        return pd.DataFrame(rows, columns=["statistic", "estimate", "ci_low", "ci_high", "pvalue"])


def _ols_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    rx = stats.rankdata(x)
    ry = stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(), ry - ry.mean(axis=-1, keepdims=True)
    denom = np.sqrt((rx @ rx) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ry @ rx) / denom


def _ratio(y: np.ndarray, early: np.ndarray, late: np.ndarray) -> np.ndarray:
    if not early.any() or not late.any():
        return np.full(y.shape[:-1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return y[..., late].mean(axis=-1) / y[..., early].mean(axis=-1)


def _one_sided_p(pivots: np.ndarray, null_value: float) -> float:
    finite = pivots[np.isfinite(pivots)]
    if finite.size == 0:
        return float("nan")
    return float((1 + np.sum(finite >= null_value)) / (finite.size + 1))


def depth_trend(
    statistic: np.ndarray,
    replicates: np.ndarray,
    *,
    confidence: float = 0.95,
    interval: Interval = "basic",
    use: np.ndarray | None = None,
) -> TrendResult:
    """Slope, Spearman rho and late/early ratio of ``statistic`` (L,) against normalized
    depth, with percentile CIs from bootstrap ``replicates`` (B, L) of the same statistic.

    ``use`` (L,) bool drops layers (e.g. degenerate ones) without moving the others: depth
    stays layer / (L - 1) and the thirds are thirds of all L layers.
    """
    y = np.asarray(statistic, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64)
    L = y.shape[0]
    if reps.ndim != 2 or reps.shape[1] != L:
        raise ValueError(f"replicates must be (n_resamples, {L}), got {reps.shape}")
    use = np.ones(L, bool) if use is None else np.asarray(use, dtype=bool)
    if use.sum() < 3:
        raise InsufficientDataError(f"a depth trend needs >= 3 usable layers, got {int(use.sum())}")
    idx = np.arange(L)
    third = max(1, L // 3)
    early, late = use & (idx < third), use & (idx >= L - third)
    x = _depth(L)[use]
    slope = float(_ols_slope(x, y[use]))
    rho = float(_spearman(x, y[use]))
    ratio = float(_ratio(y, early, late))
    slopes = _pivot(slope, _ols_slope(x, reps[:, use]), interval)
    rhos = _pivot(rho, _spearman(x, reps[:, use]), interval)
    ratios = _pivot(ratio, _ratio(reps, early, late), interval)

    def ci(pivots: np.ndarray) -> tuple[float, float]:
        finite = pivots[np.isfinite(pivots)]
        if finite.size == 0:
            return (float("nan"), float("nan"))
        lo, hi = _interval(0.0, finite, confidence, "percentile")  # already pivoted
        return (float(lo), float(hi))

    return TrendResult(
        n_layers=L,
        layers_used=tuple(int(i) for i in idx[use]),
        early_layers=tuple(int(i) for i in idx[early]),
        late_layers=tuple(int(i) for i in idx[late]),
        slope=slope,
        slope_ci=ci(slopes),
        slope_pvalue=_one_sided_p(slopes, 0.0),
        rho=rho,
        rho_ci=ci(rhos),
        ratio=ratio,
        ratio_ci=ci(ratios),
        ratio_pvalue=_one_sided_p(ratios, 1.0),
        confidence=confidence,
        interval=interval,
        n_resamples=reps.shape[0],
    )


# ------------------------------------------------------------------ ranking


def ranking(
    D: np.ndarray,
    replicates: np.ndarray | None = None,
    *,
    by: Literal["attribute", "subject"] = "attribute",
    names: list[str] | tuple[str, ...] | None = None,
    use: np.ndarray | None = None,
    top_k: int = 3,
    confidence: float = 0.95,
    interval: Interval = "basic",
) -> pd.DataFrame:
    """Attributes (or subjects) ranked by mean |D| over the other axis and the used layers.

    With bootstrap ``replicates`` (B, L, S, A): a percentile CI of each mean |D| and
    ``top_k_share``, the share of resamples in which it ranks within the top ``top_k`` —
    the direct evidence for "these are the most distinctive".
    """
    D = np.asarray(D)
    if by not in ("attribute", "subject"):
        raise ValueError(f"by must be 'attribute' or 'subject', got {by!r}")
    use = np.ones(D.shape[0], bool) if use is None else np.asarray(use, dtype=bool)
    if not use.any():
        raise InsufficientDataError("ranking needs at least one usable layer")
    other = 1 if by == "attribute" else 2  # axis of (L, S, A) averaged away with the layers

    def score(d: np.ndarray) -> np.ndarray:  # (..., L, S, A) -> (..., n_ranked)
        a = np.abs(d[..., use, :, :])
        return a.mean(axis=(-3, -3 + other), dtype=np.float64)

    est = score(D)
    n = est.shape[0]
    names = [f"{by} {i}" for i in range(n)] if names is None else list(names)
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} {by}s")
    signed = np.asarray(D)[use].mean(axis=(0, other))
    out = pd.DataFrame({by: np.arange(n), "name": names, "mean_abs_D": est, "mean_D": signed})
    if replicates is not None:
        reps = score(np.asarray(replicates))  # (B, n)
        ci = _interval(est, reps, confidence, interval)
        out["ci_low"], out["ci_high"] = ci[:, 0], ci[:, 1]
        # rank 0 = largest; ties broken by order, which for continuous statistics is moot.
        ranks = np.argsort(np.argsort(-reps, axis=1), axis=1)
        out["top_k_share"] = (ranks < top_k).mean(axis=0)
    out = out.sort_values("mean_abs_D", ascending=False, kind="stable").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, n + 1))
    return out
