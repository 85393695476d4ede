"""Geometry of residual vectors: norms, outlier dimensions, anisotropy.

Pure functions on numpy arrays. Residuals are ``(n_layers, n_sentences, d_model)``; the
sentences of one (subject, attribute) pair are correlated (same template, same subject),
and pairs sharing a subject or an attribute are correlated too, so every interval here comes
from the two-way (subject x attribute) bootstrap of the cells (``cell_weights``), never from
treating coordinates, sentences or pairs as independent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from harness.stats.errors import InsufficientDataError
from harness.stats.inference import crossed_weights


def _check_resid(resid: np.ndarray) -> np.ndarray:
    # Anything with a shape and [layer] (an array, a memmap, Evidence.resid) is read one
    # layer at a time below; nested lists become an array.
    x = resid if hasattr(resid, "shape") else np.asarray(resid)
    if len(x.shape) != 3 or min(x.shape) < 1:
        raise ValueError(f"residuals must be (n_layers, n_sentences, d_model), got {x.shape}")
    return x


def _cells(
    subjects: np.ndarray, attributes: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sentence's (subject, attribute) cell, and each cell's subject and attribute
    codes: (sentence -> cell index, cell subjects, cell attributes)."""
    subjects = np.asarray(subjects).ravel()
    attributes = np.asarray(attributes).ravel()
    if subjects.size != n or attributes.size != n:
        raise ValueError(f"need one subject and attribute per sentence ({n})")
    s_codes = np.unique(subjects.astype(str), return_inverse=True)[1]
    a_codes = np.unique(attributes.astype(str), return_inverse=True)[1]
    if s_codes.max(initial=0) < 1 or a_codes.max(initial=0) < 1:
        raise InsufficientDataError("resampling needs at least two subjects and two attributes")
    _, index = np.unique(s_codes * (a_codes.max() + 1) + a_codes, return_inverse=True)
    first = np.unique(index, return_index=True)[1]
    return index, s_codes[first], a_codes[first]


def cell_weights(
    cell_subjects: np.ndarray, cell_attributes: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """(n_resamples, n_cells) two-way bootstrap weights of the (subject, attribute) cells:
    subjects and attributes are crossed, so both are resampled (``crossed_weights``), never
    the cells as if they were independent."""
    return crossed_weights(cell_subjects, cell_attributes, n_resamples, seed)


def percentile_ci(draws: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the resampled statistics. A resample where the statistic is
    undefined (NaN: a two-way draw of one subject has no unrelated sentence pairs) is left
    out, as that design cannot measure it."""
    alpha = 1 - confidence
    lo, hi = np.nanquantile(np.asarray(draws, dtype=np.float64), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def zscore_dims(block: np.ndarray) -> np.ndarray:
    """Each dimension (column) of ``block`` (n, d) centred and scaled to unit sd over the
    rows; a constant dimension is only centred."""
    sd = block.std(axis=0)
    return (block - block.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def rms_normalized(block: np.ndarray) -> np.ndarray:
    """Each vector divided by its root-mean-square coordinate: a LayerNorm's scale without
    its gain, so a magnitude threshold means the same in every layer and model (the
    LLM.int8 criterion was set on the normalized inputs of linear layers, not on the raw
    residual stream, whose scale grows with depth)."""
    x = np.asarray(block, dtype=np.float64)
    rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True))
    return x / np.where(rms > 0, rms, 1.0)


# ----------------------------------------------------------------- outlier dimensions


@dataclass(frozen=True)
class OutlierDimensions:
    dims: tuple[int, ...]  # dimensions meeting the criterion on all sentences
    n_dims: int
    confidence_interval: tuple[float, float]  # of n_dims, resampling pairs
    layer_share: np.ndarray  # (d_model,) share of layers in which each dimension is hit
    hit: np.ndarray  # (n_layers, d_model) bool: dimension hit at that layer
    selection_rate: np.ndarray  # (d_model,) share of resamples selecting each dimension
    n_clusters: int
    n_resamples: int


def outlier_dimensions(
    resid: np.ndarray,
    subjects: np.ndarray,
    attributes: np.ndarray,
    magnitude: float = 6.0,
    row_share: float = 0.06,
    layer_share: float = 0.25,
    normalize: bool = True,
    n_resamples: int = 500,
    seed: int = 0,
) -> OutlierDimensions:
    """Dettmers et al.'s (2022) systematic outlier features on residual vectors.

    A dimension is *hit* at a layer when |value| >= ``magnitude`` in at least ``row_share``
    of the sentences (their "6 % of sequence dimensions"; here one token per sentence); it
    is an *outlier dimension* when hit in at least ``layer_share`` of the layers. With
    ``normalize`` the values are first divided by each vector's RMS (see ``rms_normalized``).
    The count's interval resamples subjects and attributes (two-way) and recounts.
    """
    x = _check_resid(resid)
    n_layers, n, d_model = x.shape
    index, cell_subjects, cell_attributes = _cells(subjects, attributes, n)
    n_clusters = cell_subjects.size
    onehot = np.zeros((n_clusters, n))
    onehot[index, np.arange(n)] = 1.0
    sizes = onehot.sum(axis=1)
    # hits per (layer, cluster, dimension): all the bootstrap needs.
    counts = np.empty((n_layers, n_clusters, d_model))
    for layer in range(n_layers):
        block = rms_normalized(x[layer]) if normalize else np.asarray(x[layer], np.float64)
        counts[layer] = onehot @ (np.abs(block) >= magnitude)
    hit = counts.sum(axis=1) / n >= row_share
    share = hit.mean(axis=0)
    dims = tuple(int(d) for d in np.flatnonzero(share >= layer_share))
    weights = cell_weights(cell_subjects, cell_attributes, n_resamples, seed)
    n_drawn = np.empty(n_resamples)
    selected = np.zeros(d_model)
    for start in range(0, n_resamples, 50):
        w = weights[start : start + 50]
        shares = np.einsum("bp,lpd->bld", w, counts) / (w @ sizes)[:, None, None]
        chosen = (shares >= row_share).mean(axis=1) >= layer_share
        n_drawn[start : start + 50] = chosen.sum(axis=1)
        selected += chosen.sum(axis=0)
    return OutlierDimensions(
        dims=dims,
        n_dims=len(dims),
        confidence_interval=percentile_ci(n_drawn),
        layer_share=share,
        hit=hit,
        selection_rate=selected / n_resamples,
        n_clusters=n_clusters,
        n_resamples=n_resamples,
    )


@dataclass(frozen=True)
class MassiveActivations:
    max_abs: float  # largest |value| at the layer
    max_dim: int  # its dimension
    max_ratio: float  # largest per-vector max|x| / median|x|
    share: float  # share of vectors holding a massive activation
    dims: tuple[int, ...]  # dimensions holding them, most frequent first


def massive_activations(
    block: np.ndarray, absolute: float = 100.0, ratio: float = 1000.0
) -> MassiveActivations:
    """Sun et al.'s (2024) massive activations in one layer's vectors (n, d_model): a value
    with |x| > ``absolute`` and at least ``ratio`` times its vector's median |x|."""
    a = np.abs(np.asarray(block, dtype=np.float64))
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"a layer's vectors must be (n, d_model), got {a.shape}")
    median = np.median(a, axis=1, keepdims=True)
    massive = (a > absolute) & (a >= ratio * median)
    rows_max = a.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(median[:, 0] > 0, rows_max / median[:, 0], np.inf)
    flat = int(np.argmax(a))
    per_dim = massive.sum(axis=0)
    order = np.argsort(-per_dim, kind="stable")
    return MassiveActivations(
        max_abs=float(a.flat[flat]),
        max_dim=flat % a.shape[1],
        max_ratio=float(ratios.max()),
        share=float(massive.any(axis=1).mean()),
        dims=tuple(int(d) for d in order if per_dim[d] > 0),
    )


def top_energy_dims(block: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` dimensions with the largest mean squared RMS-normalized value in one
    layer's vectors (n, d_model): those that carry most of the vectors' squared norm."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    energy = np.mean(rms_normalized(block) ** 2, axis=0)
    return np.sort(np.argsort(-energy, kind="stable")[:k])


# --------------------------------------------------------------------- norm growth


@dataclass(frozen=True)
class NormGrowth:
    rate: float  # exp(slope of mean log-norm on layer index): growth factor per layer
    confidence_interval: tuple[float, float]
    r2_log: float  # R^2 of the straight line through mean log-norm per layer
    r2_log_ci: tuple[float, float]
    r2_linear: float  # R^2 of a straight line through the geometric-mean norm (for contrast)
    rate_draws: np.ndarray  # (n_resamples,) each resample's growth factor
    # The shape: the median per-layer log growth of the early and the late half of the
    # layers, and their relative difference 2 (late - early) / (late + early), 0 for
    # geometric growth, +-2/3 when one half grows twice as fast (in log) as the other.
    early_rate: float  # exp(median log increment) over the early half
    late_rate: float
    acceleration: float
    acceleration_ci: tuple[float, float]
    acceleration_draws: np.ndarray  # (n_resamples,); +inf where the halves do not grow
    layer_mean_log_norm: np.ndarray  # (n_layers,)
    layer_ci: np.ndarray  # (n_layers, 2) CI of each layer's mean log-norm
    n_clusters: int
    n_resamples: int

    def p_below(self, rate: float) -> float:
        """One-sided bootstrap p of a growth factor <= ``rate``."""
        return float((1 + np.sum(self.rate_draws <= rate)) / (self.rate_draws.size + 1))

    @property
    def largest_step(self) -> tuple[int, float]:
        """The layer a step ends at whose growth factor is largest, and that factor."""
        steps = np.diff(self.layer_mean_log_norm)
        at = int(np.argmax(steps))
        return at + 1, float(np.exp(steps[at]))


def _acceleration(log_norms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median log increments of the early and late halves of the layers, and their
    relative difference, for each row of ``log_norms`` (..., n_layers). Medians, so one
    outsized step (an embedding that jumps into the first block) does not set a half's
    rate. Where the halves' mean rate is not positive the shape is undefined: +inf, which
    counts against geometric growth."""
    steps = np.diff(log_norms, axis=-1)
    half = steps.shape[-1] // 2
    early = np.median(steps[..., :half], axis=-1)
    late = np.median(steps[..., half:], axis=-1)
    mean = 0.5 * (early + late)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(mean > 0, (late - early) / mean, np.inf)
    return early, late, acc


def _line_fit(y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and R^2 of OLS lines of each row of ``y`` (..., n_layers) on ``t``."""
    tc = t - t.mean()
    yc = y - y.mean(axis=-1, keepdims=True)
    slope = (yc @ tc) / (tc @ tc)
    resid = yc - slope[..., None] * tc
    total = np.sum(yc * yc, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(total > 0, 1 - np.sum(resid * resid, axis=-1) / total, 0.0)
    return slope, r2


def norm_growth(
    norms: np.ndarray,
    subjects: np.ndarray,
    attributes: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
) -> NormGrowth:
    """Geometric growth of vector norms with depth: ``norms`` is (n_layers, n_sentences).

    The per-layer statistic is the mean log-norm over sentences (a geometric mean), the
    rate is exp of its OLS slope on the layer index, and R^2 of that line says how close to
    geometric the growth is. The shape is tested apart, as the acceleration between the
    early and the late half of the layers (see ``_acceleration``). Subjects and attributes
    are resampled (two-way) and everything refitted.
    """
    v = np.asarray(norms, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 5:
        raise ValueError(f"norms must be (n_layers >= 5, n_sentences), got {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError("norms must be finite and positive")
    n_layers, n = v.shape
    index, cell_subjects, cell_attributes = _cells(subjects, attributes, n)
    n_clusters = cell_subjects.size
    logs = np.log(v)
    sums = np.stack([np.bincount(index, weights=row, minlength=n_clusters) for row in logs], 1)
    sizes = np.bincount(index, minlength=n_clusters).astype(np.float64)
    t = np.arange(n_layers, dtype=np.float64)
    point = sums.sum(axis=0) / n
    slope, r2 = _line_fit(point, t)
    _, r2_lin = _line_fit(np.exp(point), t)
    w = cell_weights(cell_subjects, cell_attributes, n_resamples, seed)
    means = (w @ sums) / (w @ sizes)[:, None]
    slopes, r2s = _line_fit(means, t)
    lo, hi = percentile_ci(slopes)
    early, late, acc = _acceleration(point)
    acc_draws = _acceleration(means)[2]
    # inverted_cdf: no interpolation towards an infinite draw
    acc_ci = np.quantile(acc_draws, [0.025, 0.975], method="inverted_cdf")
    layer_ci = np.stack([np.quantile(means, 0.025, axis=0), np.quantile(means, 0.975, axis=0)], 1)
    return NormGrowth(
        rate=float(np.exp(slope)),
        confidence_interval=(float(np.exp(lo)), float(np.exp(hi))),
        r2_log=float(r2),
        r2_log_ci=percentile_ci(r2s),
        r2_linear=float(r2_lin),
        rate_draws=np.exp(slopes),
        early_rate=float(np.exp(early)),
        late_rate=float(np.exp(late)),
        acceleration=float(acc),
        acceleration_ci=(float(acc_ci[0]), float(acc_ci[1])),
        acceleration_draws=acc_draws,
        layer_mean_log_norm=point,
        layer_ci=layer_ci,
        n_clusters=n_clusters,
        n_resamples=n_resamples,
    )


# ----------------------------------------------------------------------- anisotropy


@dataclass(frozen=True)
class Anisotropy:
    """Mean cosine between unrelated sentences (different subject and attribute)."""

    cosine: np.ndarray  # (n_layers,)
    cosine_ci: np.ndarray  # (n_layers, 2)
    # (n_layers,) share of the mean cosine from the k dimensions contributing most on all
    # pairs (chosen once per layer; their share is what the intervals resample)
    top_share: np.ndarray
    top_share_ci: np.ndarray  # (n_layers, 2)
    top_dims: tuple[tuple[int, ...], ...]  # per layer, the k dimensions contributing most
    pooled_cosine: float  # mean of ``cosine`` over the selected layers
    pooled_cosine_ci: tuple[float, float]
    pooled_top_share: float
    pooled_top_share_ci: tuple[float, float]
    k: int
    n_clusters: int
    n_resamples: int


def _unit_pair_sums(
    resid: np.ndarray, index: np.ndarray, n_clusters: int, standardize: bool
) -> np.ndarray:
    """(n_layers, n_clusters, d_model) sums of each pair's unit vectors."""
    x = _check_resid(resid)
    onehot = np.zeros((n_clusters, x.shape[1]))
    onehot[index, np.arange(x.shape[1])] = 1.0
    out = np.empty((x.shape[0], n_clusters, x.shape[2]))
    for layer in range(x.shape[0]):
        block = np.asarray(x[layer], dtype=np.float64)
        if standardize:
            block = zscore_dims(block)
        norm = np.linalg.norm(block, axis=1, keepdims=True)
        out[layer] = onehot @ (block / np.where(norm > 0, norm, 1.0))
    return out


def _unrelated_products(a: np.ndarray, subject: np.ndarray, attribute: np.ndarray) -> np.ndarray:
    """sum over cluster pairs (i, j) with different subject and attribute of a_i * a_j,
    per trailing coordinate; ``a`` is (batch, n_clusters, d). Inclusion-exclusion over
    group sums (all - same subject - same attribute + same pair, the cluster itself) keeps
    it linear in the number of clusters."""
    in_subject = (subject[None, :] == np.arange(subject.max() + 1)[:, None]).astype(float)
    in_attribute = (attribute[None, :] == np.arange(attribute.max() + 1)[:, None]).astype(float)
    by_subject = in_subject @ a  # (batch, n_subjects, d)
    by_attribute = in_attribute @ a
    partner = a.sum(axis=1, keepdims=True) - by_subject[:, subject] - by_attribute[:, attribute]
    return np.sum(a * (partner + a), axis=1)


def unrelated_cosine(
    resid: np.ndarray,
    subjects: np.ndarray,
    attributes: np.ndarray,
    layers: np.ndarray | None = None,
    k: int = 5,
    standardize: bool = False,
    n_resamples: int = 500,
    seed: int = 0,
) -> Anisotropy:
    """Mean cosine similarity over sentence pairs that share neither subject nor attribute
    (Ethayarajh's 2019 "randomly sampled" words, here unrelated sentences), and the share
    of it contributed by the ``k`` dimensions contributing most (Timkey & van Schijndel
    2021: cos(u, v) = sum_d u_d v_d for unit vectors, so each dimension's mean product is
    its additive contribution). Clusters are the (subject, attribute) pairs; ``layers``
    (bool or indices) selects the layers pooled into the summary numbers.
    With ``standardize`` each dimension is z-scored over all sentences of its layer first.
    """
    x = _check_resid(resid)
    n_layers, n, d_model = x.shape
    subjects = np.asarray(subjects).ravel()
    attributes = np.asarray(attributes).ravel()
    if subjects.size != n or attributes.size != n:
        raise ValueError(f"need one subject and attribute per sentence ({n})")
    if not 1 <= k <= d_model:
        raise ValueError(f"k must be in 1..{d_model}, got {k}")
    if len(np.unique(subjects.astype(str))) < 2 or len(np.unique(attributes.astype(str))) < 2:
        raise InsufficientDataError(
            "unrelated sentence pairs need at least two subjects and attributes"
        )
    index, subject, attribute = _cells(subjects, attributes, n)
    n_clusters = subject.size
    chosen = np.arange(n_layers) if layers is None else np.arange(n_layers)[layers]
    if chosen.size == 0:
        raise InsufficientDataError("no layers selected")
    sums = _unit_pair_sums(x, index, n_clusters, standardize)  # (L, P, D)
    sizes = np.bincount(index, minlength=n_clusters).astype(np.float64)
    w_all = np.vstack(
        [np.ones((1, n_clusters)), cell_weights(subject, attribute, n_resamples, seed)]
    )
    cos = np.empty((len(w_all), n_layers))
    share = np.empty((len(w_all), n_layers))
    top_dims: list[tuple[int, ...]] = []
    for start in range(0, len(w_all), 50):
        w = w_all[start : start + 50]
        pairs = _unrelated_products((w * sizes)[..., None], subject, attribute)[:, 0]
        for layer in range(n_layers):
            contrib = _unrelated_products(w[..., None] * sums[layer], subject, attribute)
            if start == 0:
                # Row 0 is the point estimate: the top dimensions are chosen once on all
                # pairs and their share resampled (re-choosing them per resample would bias
                # the share upwards, a maximum over noisy contributions).
                top_dims.append(tuple(int(d) for d in np.sort(np.argsort(-contrib[0])[:k])))
            # A two-way draw of one subject has no unrelated pairs: 0/0 -> NaN, left out
            # of the interval by percentile_ci.
            with np.errstate(divide="ignore", invalid="ignore"):
                contrib /= pairs[:, None]
                total = contrib.sum(axis=1)
                top = contrib[:, list(top_dims[layer])].sum(axis=1)
                share[start : start + 50, layer] = np.where(total != 0, top / total, np.nan)
            cos[start : start + 50, layer] = total
    point, boot = cos[0], cos[1:]
    share_point, share_boot = share[0], share[1:]

    def band(draws: np.ndarray) -> np.ndarray:
        return np.stack([np.nanquantile(draws, 0.025, 0), np.nanquantile(draws, 0.975, 0)], 1)

    # Resamples (or whole layers) with no defined share are NaN by design; numpy's
    # empty-slice warnings about them are noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cosine_ci, top_share_ci = band(boot), band(share_boot)
        pooled_share_draws = np.nanmean(share_boot[:, chosen], axis=1)
        pooled_cosine_draws = boot[:, chosen].mean(axis=1)
    return Anisotropy(
        cosine=point,
        cosine_ci=cosine_ci,
        top_share=share_point,
        top_share_ci=top_share_ci,
        top_dims=tuple(top_dims),
        pooled_cosine=float(point[chosen].mean()),
        pooled_cosine_ci=percentile_ci(pooled_cosine_draws),
        pooled_top_share=float(share_point[chosen].mean()),
        pooled_top_share_ci=percentile_ci(pooled_share_draws),
        k=k,
        n_clusters=n_clusters,
        n_resamples=n_resamples,
    )
