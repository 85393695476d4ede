"""Planted-truth activation sets: the claims' statistics are checked on these before models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import activations as activation_format
from harness.cache import Cache
from harness.config import ExtractionSettings, FitSettings, RunConfig
from harness.dataset import Dataset
from harness.evidence import Evidence
from harness.extraction import ActivationSet
from harness.keys import key_for
from harness.progress import silent
from harness.stats.families import CORE_FAMILIES

# (rng, shape) -> values; one call per (layer, sentence block)
Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]

SAMPLERS: dict[str, Sampler] = {
    "logistic": lambda rng, shape: rng.logistic(0.0, 1.0, shape),
    "normal": lambda rng, shape: rng.normal(0.0, 1.0, shape),
    "t3": lambda rng, shape: rng.standard_t(3, shape),
}


def dataset(n_subjects: int = 4, n_attributes: int = 3, per_pair: int = 4) -> Dataset:
    rows = [
        {
            "id": f"s{s}-a{a}-{i}",
            "subject": f"subject {s}",
            "attribute": f"in attribute {a}",
            "text": f"synthetic sentence {i} about subject {s} in attribute {a}",
        }
        for s in range(n_subjects)
        for a in range(n_attributes)
        for i in range(per_pair)
    ]
    return Dataset(pd.DataFrame(rows), "synthetic")


def activations(
    data: Dataset,
    sampler: Sampler | str,
    n_layers: int = 3,
    d_model: int = 64,
    seed: int = 0,
) -> ActivationSet:
    draw = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    rng = np.random.default_rng(seed)
    resid = np.stack([draw(rng, (len(data), d_model)) for _ in range(n_layers)]).astype(np.float32)
    meta = {"model": "synthetic", "n_layers": n_layers, "d_model": d_model, "seed": seed}
    return ActivationSet(resid, np.full(len(data), 8), meta)


def run_config(
    cache_dir: Path | str,
    work_dir: Path,
    models: tuple[str, ...] = ("synthetic",),
    families: tuple[str, ...] = CORE_FAMILIES,
    **fields: Any,
) -> RunConfig:
    """A run's settings for tests and benchmarks: defaults, with reports and baselines
    under ``work_dir``; ``fields`` override any other RunConfig field."""
    return RunConfig(
        **{
            "models": models,
            "dataset": None,
            "extraction": ExtractionSettings(),
            "fit": FitSettings(families=families),
            "report_dir": work_dir / "report",
            "cache_dir": cache_dir,
            "baseline_dir": work_dir / "baselines",
        }
        | fields
    )


def evidence(
    data: Dataset,
    acts: ActivationSet,
    cache_dir: Path,
    families: tuple[str, ...] = CORE_FAMILIES,
    seed: int = 0,
    model: str = "synthetic",
    tokens: str = ExtractionSettings.tokens,
    reselect: Callable[[str], Evidence] | None = None,
) -> Evidence:
    """Evidence over a planted set, read as if under token selection ``tokens``;
    ``reselect`` gives the same sentences under another (``Evidence.under_tokens``)."""
    config = run_config(
        cache_dir, cache_dir, (model,), families, seed=seed, extraction=ExtractionSettings(tokens)
    )
    # Keyed by content so two different planted sets never share cached tables.
    key = key_for(
        {
            "synthetic": acts.meta,
            "shape": acts.resid.shape,
            "sum": float(np.asarray(acts.resid, dtype=np.float64).sum()),
        }
    )
    return Evidence(
        model, acts, data, config, Cache(cache_dir), key, progress=silent, reselect=reselect
    )


# ------------------------------------------- named attributes with planted side modes


def language_dataset(
    attributes: tuple[str, ...] = ("in english", "in spanish", "in all lower case", "in japanese"),
    n_subjects: int = 8,
    per_pair: int = 5,
) -> Dataset:
    """Pairs with named attributes. Sentences of an attribute naming Japanese have no
    spaces, as real Japanese, so the 'seed' token selection would read them whole."""
    rows = []
    for s in range(n_subjects):
        for a, attribute in enumerate(attributes):
            for i in range(per_pair):
                text = (
                    f"主題{s}についての合成文{i}です。"
                    if "japanese" in attribute.lower()
                    else f"synthetic sentence {i} about subject {s} {attribute}"
                )
                row = {"id": f"s{s}-a{a}-{i}", "subject": f"subject {s}", "attribute": attribute}
                rows.append({**row, "text": text})
    return Dataset(pd.DataFrame(rows), "synthetic")


def side_mode_activations(
    data: Dataset,
    side_fraction: dict[str, float | tuple[float, ...]] | None = None,
    *,
    shift: float = 20.0,
    jitter: dict[str, float] | float = 0.5,
    scale: dict[str, float] | None = None,
    tokens: dict[str, int] | None = None,
    sampler: Sampler | str = "logistic",
    n_layers: int = 5,
    d_model: int = 96,
    seed: int = 0,
) -> ActivationSet:
    """Activations whose pooled samples carry planted secondary modes per attribute.

    Every coordinate is a draw from ``sampler`` times ``scale[attribute]`` (default 1).
    Then the first round(side_fraction[attribute] x d_model) coordinates of each sentence
    (a float, or one value per layer) are replaced by +shift, -shift, +shift, ... plus
    N(0, jitter[attribute]) noise: the same coordinates in every sentence, as the outlier
    dimensions behind real models' side modes, so the pair's pooled sample gets compact
    clusters at +-shift. Attributes not named get no side modes.

    Why shift = 20 (~11 bulk sd for a logistic bulk): with 4-6 sentences x 64-128
    coordinates the study's 4.5 x Scott bandwidth is ~1.3 bulk sd, and a side mode nearer
    than ~6 bandwidths merges into the bulk's shoulder; SmolLM2's side modes sit ~10 bulk
    sd out.
    """
    draw = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    fractions = dict(side_fraction or {})
    scales = dict(scale or {})
    counts = dict(tokens or {})
    default_sd = float(jitter) if isinstance(jitter, int | float) else 0.5
    jitters = {} if isinstance(jitter, int | float) else dict(jitter)
    attributes = data.frame["attribute"].to_numpy()
    rng = np.random.default_rng(seed)
    resid = np.empty((n_layers, len(data), d_model), dtype=np.float32)
    for layer in range(n_layers):
        block = draw(rng, (len(data), d_model))
        for attribute in dict.fromkeys(attributes):
            rows = np.flatnonzero(attributes == attribute)
            block[rows] *= scales.get(attribute, 1.0)
            planted: Any = fractions.get(attribute, 0.0)  # a float or one value per layer
            frac = planted if np.ndim(planted) == 0 else planted[layer]
            k = round(float(frac) * d_model)
            if k:
                sd = jitters.get(attribute, default_sd)
                signs = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
                block[np.ix_(rows, np.arange(k))] = signs * shift + rng.normal(
                    0.0, sd, (len(rows), k)
                )
        resid[layer] = block
    n_tokens = np.array([counts.get(a, 8) for a in attributes])
    meta = {
        "model": "synthetic-side-modes",
        "n_layers": n_layers,
        "d_model": d_model,
        "seed": seed,
        "side_fraction": {k: np.asarray(v).tolist() for k, v in fractions.items()},
        "shift": shift,
        "jitter": jitters or default_sd,
        "scale": scales,
        "sampler": sampler if isinstance(sampler, str) else repr(sampler),
    }
    return ActivationSet(resid, n_tokens, meta)


# --------------------------------- planted bimodality and planted secondary-mode counts


def pair_rows(data: Dataset) -> list[np.ndarray]:
    """Dataset rows of each (subject, attribute) pair, in ``Evidence.pairs`` order."""
    frame = data.frame.reset_index(drop=True)
    grouped = frame.groupby(["subject", "attribute"], sort=False).indices
    return [np.asarray(rows) for rows in grouped.values()]


def bimodal_activations(
    data: Dataset,
    bimodal_layers: tuple[int, ...] | list[int] = (-1,),
    *,
    separation: float = 3.0,
    balance: float = 0.5,
    sampler: Sampler | str = "logistic",
    n_layers: int = 5,
    d_model: int = 128,
    seed: int = 0,
) -> ActivationSet:
    """Activations whose pooled samples are two-component mixtures in ``bimodal_layers``.

    Every coordinate is a draw from ``sampler``; in a bimodal layer the first
    round(balance x d_model) coordinates of every sentence are shifted by +separation and the
    others by -separation. Fixed coordinates, as a real model's sign pattern would be, so
    each pair's pooled sample is a mixture with weights balance / 1 - balance and modes at
    +-separation: balance 0.5 is the study's "almost perfectly symmetrically bimodal".

    Why separation = 3 (logistic scale 1, so the modes are 6 scale units or 3.3 component
    sd apart): the valley between the modes is then ~50 % below them after the bimodality
    claim's KDE smoothing; at 2 it is ~15 %, which is hardly "almost perfectly bimodal".
    Negative layer indices count from the end.
    """
    draw = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    chosen = sorted({int(layer) % n_layers for layer in bimodal_layers})
    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(d_model) < round(balance * d_model), 1.0, -1.0)
    resid = np.empty((n_layers, len(data), d_model), dtype=np.float32)
    for layer in range(n_layers):
        block = draw(rng, (len(data), d_model))
        if layer in chosen:
            block = block + signs * separation
        resid[layer] = block
    meta = {
        "model": "synthetic-bimodal",
        "n_layers": n_layers,
        "d_model": d_model,
        "seed": seed,
        "bimodal_layers": chosen,
        "separation": separation,
        "balance": balance,
        "sampler": sampler if isinstance(sampler, str) else repr(sampler),
    }
    return ActivationSet(resid, np.full(len(data), 8), meta)


def trend_counts(
    n_layers: int,
    n_pairs: int,
    start: float,
    end: float,
    trials: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n_layers, n_pairs) counts ~ Binomial(trials, p), p linear in depth from start to end:
    a count that tends to fall (start > end), rise, or stay (start == end) with depth, with
    pair-to-pair noise around the trend."""
    p = np.linspace(start, end, n_layers)[:, None]
    return rng.binomial(trials, np.broadcast_to(p, (n_layers, n_pairs)))


def mode_count_activations(
    data: Dataset,
    left_counts: np.ndarray,
    right_counts: np.ndarray,
    *,
    positions: tuple[float, ...] = (20.0, 40.0),
    jitter: float = 2.0,
    sampler: Sampler | str = "logistic",
    d_model: int = 256,
    seed: int = 0,
    dims_per_mode: int = 1,
) -> ActivationSet:
    """Activations with a planted number of secondary modes left and right of the bulk.

    ``left_counts`` and ``right_counts`` are (n_layers, n_pairs) integers (pairs in
    ``pair_rows`` order): at that layer, the pair's sentences put one coordinate each at
    -positions[0], ..., -positions[k-1] (left) and +positions[...] (right), plus
    N(0, jitter) noise; different modes use different coordinates, the same in every
    sentence, as real outlier dimensions (``dims_per_mode`` coordinates per mode: 1 makes
    outlier-dimension modes, 10 or more mixture modes in ``stats.attribution``'s terms).
    The bulk is ``sampler``.

    Why positions 20 and 40 and jitter 2 with 256 coordinates and 8 sentences (2,048
    values): the study's KDE bandwidth (4.5 x Scott on the sample's own sd) is then ~1 sd,
    and every far mode widens it. With these settings each of the counts 0-2 on one side
    and 0-1 on the other is recovered in >= 90 % of samples (2 on both sides is not: the
    bandwidth then merges the pairs of modes). A narrow jitter (0.5) loses the outermost
    mode: the grid ends at the sample's max, and the peak sits against the grid's end.
    """
    left = np.asarray(left_counts, dtype=int)
    right = np.asarray(right_counts, dtype=int)
    rows_by_pair = pair_rows(data)
    if left.shape != right.shape or left.ndim != 2 or left.shape[1] != len(rows_by_pair):
        raise ValueError(
            f"counts must both be (n_layers, {len(rows_by_pair)}); got {left.shape}, {right.shape}"
        )
    most = int(max(left.max(initial=0), right.max(initial=0)))
    needed = int(left.max(initial=0) + right.max(initial=0)) * dims_per_mode
    if most > len(positions) or needed > d_model:
        raise ValueError(f"a count of {most} needs at least {most} positions and coordinates")
    if min(left.min(initial=0), right.min(initial=0)) < 0:
        raise ValueError("counts must be >= 0")
    draw = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    rng = np.random.default_rng(seed)
    n_layers = left.shape[0]
    resid = np.empty((n_layers, len(data), d_model), dtype=np.float32)
    for layer in range(n_layers):
        block = draw(rng, (len(data), d_model))
        for pair, rows in enumerate(rows_by_pair):
            offsets = [-p for p in positions[: left[layer, pair]]]
            offsets += list(positions[: right[layer, pair]])
            for k, offset in enumerate(offsets):
                cols = range(k * dims_per_mode, (k + 1) * dims_per_mode)
                block[np.ix_(rows, cols)] = (  # type: ignore[arg-type]  # a range works
                    offset + rng.normal(0.0, jitter, (len(rows), dims_per_mode))
                )
        resid[layer] = block
    meta = {
        "model": "synthetic-mode-counts",
        "n_layers": n_layers,
        "d_model": d_model,
        "seed": seed,
        "left_counts": left.tolist(),
        "right_counts": right.tolist(),
        "positions": list(positions),
        "jitter": jitter,
        "dims_per_mode": dims_per_mode,
        "sampler": sampler if isinstance(sampler, str) else repr(sampler),
    }
    return ActivationSet(resid, np.full(len(data), 8), meta)


# ------------------------------------------------- a distribution that changes with depth


def layered_activations(
    data: Dataset, samplers: list[Sampler], d_model: int = 64, seed: int = 0
) -> ActivationSet:
    """Activations whose distribution is planted per layer: layer ``l`` draws every
    sentence's coordinates from ``samplers[l]``. A trend over depth in any statistic of the
    samples (kurtosis, spread, skew) is then known exactly."""
    if not samplers:
        raise ValueError("layered_activations needs at least one sampler (one per layer)")
    rng = np.random.default_rng(seed)
    resid = np.stack([draw(rng, (len(data), d_model)) for draw in samplers]).astype(np.float32)
    meta = {"model": "synthetic-layered", "n_layers": len(samplers), "d_model": d_model}
    meta |= {"seed": seed, "samplers": [repr(s) for s in samplers]}
    return ActivationSet(resid, np.full(len(data), 8), meta)


# ------------------------- planted geometry: norm growth, outlier dimensions, anisotropy


def geometry_activations(
    data: Dataset,
    *,
    growth: float = 1.0,
    norm_jitter: float = 0.1,
    outlier_dims: tuple[int, ...] = (),
    outlier_scale: float = 20.0,
    moving_outliers: bool = False,
    offset: float = 0.0,
    offset_dims: int | None = None,
    pair_sd: float = 0.3,
    sampler: Sampler | str = "normal",
    n_layers: int = 6,
    d_model: int = 128,
    seed: int = 0,
) -> ActivationSet:
    """Activations with planted norm growth, outlier dimensions and a shared direction.

    Each sentence's vector at layer l is (bulk + pair effect + offset + outliers) times
    growth**l times a per-sentence log-normal factor (sd ``norm_jitter``): the bulk is
    ``sampler`` per coordinate, the pair effect one N(0, pair_sd) vector per
    (subject, attribute) pair (so sentences of a pair are correlated, as in a model), the
    offset a fixed vector of norm offset x sqrt(d_model) (the bulk's norm) spread over the
    first ``offset_dims`` coordinates (all, with alternating signs, when None); unrelated
    sentences then have mean cosine ~ offset^2 / (1 + offset^2). ``outlier_dims`` carry
    outlier_scale x (1 + N(0, 0.1)) in every sentence (fixed sign, as real outlier
    features); with ``moving_outliers`` they move to other coordinates at every layer, so
    no dimension is an outlier in more than one layer.
    """
    draw = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    rng = np.random.default_rng(seed)
    rows_by_pair = pair_rows(data)
    k = d_model if offset_dims is None else int(offset_dims)
    if not 1 <= k <= d_model:
        raise ValueError(f"offset_dims must be in 1..{d_model}, got {offset_dims}")
    direction = np.zeros(d_model)
    direction[:k] = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
    shared = offset * np.sqrt(d_model) * direction / np.linalg.norm(direction)
    resid = np.empty((n_layers, len(data), d_model), dtype=np.float32)
    for layer in range(n_layers):
        block = draw(rng, (len(data), d_model)) + shared
        for rows in rows_by_pair:
            block[rows] += rng.normal(0.0, pair_sd, d_model)
        dims = np.asarray(outlier_dims, dtype=int)
        if dims.size:
            if moving_outliers:
                dims = (dims + layer * (dims.size + 7)) % d_model
            block[:, dims] = outlier_scale * (1 + rng.normal(0.0, 0.1, (len(data), dims.size)))
        factor = growth**layer * np.exp(rng.normal(0.0, norm_jitter, (len(data), 1)))
        resid[layer] = block * factor
    meta = {
        "model": "synthetic-geometry",
        "n_layers": n_layers,
        "d_model": d_model,
        "seed": seed,
        "growth": growth,
        "norm_jitter": norm_jitter,
        "outlier_dims": list(outlier_dims),
        "outlier_scale": outlier_scale,
        "moving_outliers": moving_outliers,
        "offset": offset,
        "offset_dims": offset_dims,
        "pair_sd": pair_sd,
        "sampler": sampler if isinstance(sampler, str) else repr(sampler),
    }
    return ActivationSet(resid, np.full(len(data), 8), meta)


# ------------------------------- subject/attribute cells for the distinctiveness claim


def planted_cells(
    n_subjects: int = 4,
    n_attributes: int = 5,
    per_cell: int = 10,
    n_layers: int = 9,
    d: int = 32,
    w_s: float = 1.0,
    w_a: float = 1.0,
    gain: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    attribute_strength: np.ndarray | None = None,
    noise: float = 1.0,
    layer_corr: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(resid, subject, attribute). ``gain`` (L,) scales the cell structure per layer,
    ``offset`` (L,) adds a direction common to every sentence; the noise of one sentence is
    correlated across layers (``layer_corr``), as in a residual stream."""
    rng = np.random.default_rng(seed)
    k = n_subjects + n_attributes + 1
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0].T * np.sqrt(d)
    u, v, common = basis[:n_subjects], basis[n_subjects:-1], basis[-1]
    subject = np.repeat(np.arange(n_subjects), n_attributes * per_cell)
    attribute = np.tile(np.repeat(np.arange(n_attributes), per_cell), n_subjects)
    gain = np.ones(n_layers) if gain is None else np.asarray(gain)
    offset = np.zeros(n_layers) if offset is None else np.asarray(offset)
    strength = np.ones(n_attributes) if attribute_strength is None else attribute_strength
    structure = w_s * u[subject] + (w_a * strength[attribute])[:, None] * v[attribute]
    sentence_noise = rng.standard_normal((len(subject), d))
    resid = np.empty((n_layers, len(subject), d), dtype=np.float32)
    for layer in range(n_layers):
        fresh = rng.standard_normal((len(subject), d))
        z = np.sqrt(layer_corr) * sentence_noise + np.sqrt(1 - layer_corr) * fresh
        resid[layer] = gain[layer] * structure + offset[layer] * common + noise * z
    return resid, subject, attribute


# ------------------------------------------- planted sets on disk (activation-set format)


def write_activation_set(
    folder: Path,
    data: Dataset,
    acts: ActivationSet,
    model: str = "synthetic",
    dtype: str = "float32",
) -> Path:
    """Write a planted set in the documented format (docs/activation-format.md), as a
    researcher's own pipeline would, so claims can run on it through ``--lm-activations``."""
    resid = np.asarray(acts.resid).astype(dtype)
    meta = {
        **acts.meta,
        "model": model,
        "hook": "synthetic",
        "tokens": "seed",
        "processing": "synthetic",
    }
    planted = ActivationSet(resid, np.asarray(acts.n_tokens, dtype=np.int64), meta)
    return activation_format.write(folder, planted, data.frame)


# ------------------------------------ planted anomalies: attributes shifted or spread out


def anomaly_activations(
    data: Dataset,
    anomalous: dict[str, tuple[float, float]],
    *,
    sampler: Sampler | str = "logistic",
    n_layers: int = 2,
    d_model: int = 12,
    seed: int = 0,
) -> ActivationSet:
    """Activations whose normal sentences are iid ``sampler`` draws per coordinate, scaled
    per coordinate from 3 down to 0.5 (distinct variances, so principal directions are the
    coordinate axes and keep the sampler's shape). A sentence whose attribute contains a key
    of ``anomalous`` (case-insensitive) is drawn as spread x draw + shift x sign, per
    coordinate and in the same scaled units, with a fixed random sign pattern per key: a
    dense shift (shift > 0) or a wider spread (spread > 1). (shift, spread) = (0, 1) plants
    anomalies drawn exactly as the normal sentences (a null)."""
    draw = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    rng = np.random.default_rng(seed)
    scales = np.geomspace(3.0, 0.5, d_model)
    attributes = data.frame["attribute"].str.lower().to_numpy()
    resid = np.empty((n_layers, len(data), d_model), dtype=np.float32)
    signs = {key: rng.choice([-1.0, 1.0], d_model) for key in anomalous}
    for layer in range(n_layers):
        block = draw(rng, (len(data), d_model))
        for key, (shift, spread) in anomalous.items():
            rows = np.array([key.lower() in a for a in attributes])
            block[rows] = spread * block[rows] + shift * signs[key]
        resid[layer] = block * scales
    meta = {
        "model": "synthetic-anomaly",
        "n_layers": n_layers,
        "d_model": d_model,
        "seed": seed,
        "anomalous": {k: list(v) for k, v in anomalous.items()},
        "sampler": sampler if isinstance(sampler, str) else repr(sampler),
    }
    return ActivationSet(resid, np.full(len(data), 8), meta)
