"""Planted activation sets at production size, with the nuisances real models have.

The claims are calibrated at the sizes the committed reports use: the default dataset's
10 subjects x 12 attributes x 22 sentences and d_model 576 (SmolLM2-135M's width), so one
(layer, pair) sample pools 22 x 576 = 12,672 values. ``planted_set`` builds such a set from
a ``Base`` (the bulk), switchable ``Nuisances`` (what real residual streams add to it) and
optional ``SideModes`` (a planted truth for the mode claims).

Units: every size below is in *bulk units*, the bulk sampler's robust spread
min(sd, IQR / 1.349) (``bulk_unit``): 1 for 'normal', 1.63 for 'logistic', 1.13 for 't3'.
That is the spread the claims' bulk-tied statistics read off a sample, so "300 bulk units"
is a 300x outlier to them whatever the sampler.

Random streams: the bulk, token counts, crossed effects, homogeneous-attribute shift,
side modes, per-dimension scales, offsets and massive dims each draw from their own child of
``SeedSequence(seed)``. Switching one nuisance on or off therefore leaves every other part
of the set unchanged (same seed), so a claim can be run on paired sets that differ in one
nuisance only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.dataset import Dataset
from harness.extraction import ActivationSet
from harness.synthetic import SAMPLERS, pair_rows

# The default dataset's names, in its order ('in japanese' is third, so the small variants
# keep it).
SUBJECTS = (
    "economics",
    "music",
    "computer science",
    "celebrities",
    "politics",
    "effective altruism",
    "poetry",
    "science fiction",
    "vacation",
    "american football",
)
ATTRIBUTES = (
    "in english",
    "in spanish",
    "in japanese",
    "in all upper case",
    "in all lower case",
    "in an angry tone",
    "in a kind tone",
    "in a concise style",
    "in a didactic style",
    "in a helpful style",
    "in a flowery style",
    "in a childish style",
)
_JAPANESE_SUBJECTS = {
    "economics": "経済学",
    "music": "音楽",
    "computer science": "計算機科学",
    "celebrities": "有名人",
    "politics": "政治",
    "effective altruism": "効果的利他主義",
    "poetry": "詩",
    "science fiction": "空想科学小説",
    "vacation": "休暇",
    "american football": "アメリカンフットボール",
}

# Robust spread min(sd, IQR / 1.349) of each sampler (tests check these against draws):
# normal 1 = 1; logistic sd pi/sqrt(3) = 1.814, IQR 2 ln 3 -> 1.629; t3 sd sqrt(3) = 1.732,
# IQR 2 x 0.76489 -> 1.134.
_BULK_UNIT = {
    "normal": 1.0,
    "logistic": 2.0 * math.log(3.0) / 1.349,
    "t3": 2.0 * 0.764892328404345 / 1.349,
}
# The sampler's own sd (t3: sqrt(3)).
SAMPLER_SD = {"normal": 1.0, "logistic": math.pi / math.sqrt(3.0), "t3": math.sqrt(3.0)}


def bulk_unit(sampler: str) -> float:
    """The sampler's robust spread min(sd, IQR / 1.349): the unit of every planted size."""
    _check_sampler(sampler)
    return _BULK_UNIT[sampler]


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS or sampler not in _BULK_UNIT:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {sorted(_BULK_UNIT)}")


def _check_nonnegative(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{owner}.{name} must be a finite number >= 0, got {value!r}")


# ------------------------------------------------------------------------------ dataset


def production_dataset(n_subjects: int = 10, n_attributes: int = 12, per_pair: int = 22) -> Dataset:
    """The default dataset's shape with synthetic texts: the first ``n_subjects`` subjects and
    ``n_attributes`` attributes of the default dataset, in its order, ``per_pair`` sentences
    each; rows subject-major, then attribute, then sentence. 'in japanese' sentences have no
    spaces (as real Japanese, which the 'seed' token selection then reads whole)."""
    if not 1 <= n_subjects <= len(SUBJECTS):
        raise ValueError(f"n_subjects must be in 1..{len(SUBJECTS)}, got {n_subjects}")
    if not 1 <= n_attributes <= len(ATTRIBUTES):
        raise ValueError(f"n_attributes must be in 1..{len(ATTRIBUTES)}, got {n_attributes}")
    if per_pair < 1:
        raise ValueError(f"per_pair must be >= 1, got {per_pair}")
    rows = []
    for subject in SUBJECTS[:n_subjects]:
        for attribute in ATTRIBUTES[:n_attributes]:
            slug = attribute.removeprefix("in ").replace(" ", "-")
            for i in range(per_pair):
                rows.append(
                    {
                        "id": f"{subject}/{slug}/{i:02d}",
                        "subject": subject,
                        "attribute": attribute,
                        "text": _text(subject, attribute, i),
                    }
                )
    return Dataset(pd.DataFrame(rows), "planted")


def _text(subject: str, attribute: str, i: int) -> str:
    if attribute == "in japanese":
        return f"{_JAPANESE_SUBJECTS[subject]}についての合成文{i}番です。"
    if attribute == "in spanish":
        return f"Frase sintética número {i} sobre {subject}, escrita en español."
    text = f"Synthetic sentence number {i} about {subject}, written {attribute}."
    if attribute == "in all upper case":
        return text.upper()
    if attribute == "in all lower case":
        return text.lower()
    return text


# ------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Base:
    """The bulk: what a set is without nuisances.

    Every coordinate of every sentence at every layer is a ``sampler`` draw (marginally
    exactly, at every layer). ``layer_corr``: a sentence's coordinate at layer l is, with
    probability sqrt(layer_corr), its persistent value (one draw per sentence and
    coordinate, shared by all layers), else a fresh draw; two layers then correlate by
    exactly ``layer_corr`` and the marginal stays the sampler's (a weighted sum of draws
    would drift towards a Gaussian), as a residual stream carries a sentence's content
    from layer to layer. ``growth``: layer l is multiplied by growth**l (residual norm
    growth with depth). ``tokens_median`` / ``tokens_sigma``: n_tokens per sentence is
    round(lognormal(log median, sigma)), BOS included (SmolLM2's default-dataset sentences
    have ~21 tokens).
    """

    sampler: str = "logistic"
    n_layers: int = 4
    d_model: int = 576
    layer_corr: float = 0.5
    growth: float = 1.0
    tokens_median: float = 21.0
    tokens_sigma: float = 0.25

    def __post_init__(self) -> None:
        _check_sampler(self.sampler)
        if self.n_layers < 1 or self.d_model < 1:
            raise ValueError(
                f"n_layers and d_model must be >= 1, got {self.n_layers}, {self.d_model}"
            )
        if not 0.0 <= self.layer_corr <= 1.0:
            raise ValueError(f"layer_corr must be in [0, 1], got {self.layer_corr}")
        if not self.growth > 0:
            raise ValueError(f"growth must be > 0, got {self.growth}")
        if not self.tokens_median >= 1:
            raise ValueError(f"tokens_median must be >= 1, got {self.tokens_median}")
        _check_nonnegative("Base", tokens_sigma=self.tokens_sigma)


@dataclass(frozen=True)
class Nuisances:
    """What real residual streams add to the bulk; every field off by default. Sizes are in
    bulk units (``bulk_unit``).

    massive_dims: k coordinates with a huge fixed-sign value in every sentence (SmolLM2-135M
        has 3 dims at 100-1000x the bulk's spread; "massive activations", Sun et al. 2024).
        Magnitudes are spread geometrically over [massive_scale/3, massive_scale*3] (k = 1:
        massive_scale), each with its own fixed sign.
    massive_jitter: relative per-sentence sd of a massive value (massive activations vary
        by a few % between inputs, far less than their size).
    massive_moving: the massive dims change with depth (SmolLM2's dim 17 becomes the largest
        only late): over the middle third of the layers the k early dims shrink to half
        their size and one further dim grows from 0 to massive_scale*3, so it is the largest
        in the last third.
    scale_sigma: per-dimension multiplicative scale exp(N(0, scale_sigma)), fixed across
        sentences and layers (coordinates of real residuals differ in spread; RMSNorm
        weights and unequal feature usage; realistic 0.1-0.3).
    offset_sd: per-dimension offsets N(0, offset_sd) (real residual coordinates have nonzero
        means: the anisotropy / common-direction observation).
    subject_sd, attribute_sd, pair_sd: crossed random effects, one N(0, sd) vector per
        subject, per attribute and per (subject, attribute) pair, added to all its sentences
        (sentences about the same topic or in the same style share directions); correlated
        across layers as the bulk (``Base.layer_corr``).
    homogeneous_attribute: an attribute whose sentences are all read at the same token type
        (the 'seed' selection reads a Japanese sentence, which has no spaces, at its final
        '。'): its sentence noise around the pair centroid is multiplied by
        homogeneous_tightness, its sentences share one fixed N(0, homogeneous_shift) vector,
        and their token counts are homogeneous_length_factor times the others' (SmolLM2's
        Japanese sentences have ~61 tokens against ~21).
    length_tightening: a pure sentence-length effect on every attribute: each sentence's
        noise around its pair centroid is multiplied by (tokens / median tokens) **
        -length_tightening, so longer sentences sit tighter whatever their attribute (with
        a long homogeneous attribute, a length confound that a token-matched selection
        keeps).
    attribute_length_sd: attributes differ in length (a list is shorter than a story):
        each attribute's token counts are multiplied by exp(N(0, attribute_length_sd)).
    """

    massive_dims: int = 0
    massive_scale: float = 300.0
    massive_jitter: float = 0.05
    massive_moving: bool = False
    scale_sigma: float = 0.0
    offset_sd: float = 0.0
    subject_sd: float = 0.0
    attribute_sd: float = 0.0
    pair_sd: float = 0.0
    homogeneous_attribute: str | None = None
    homogeneous_tightness: float = 0.5
    homogeneous_shift: float = 0.0
    homogeneous_length_factor: float = 3.0
    length_tightening: float = 0.0
    attribute_length_sd: float = 0.0

    def __post_init__(self) -> None:
        if self.massive_dims < 0:
            raise ValueError(f"Nuisances.massive_dims must be >= 0, got {self.massive_dims}")
        if self.massive_moving and self.massive_dims < 1:
            raise ValueError("Nuisances.massive_moving needs massive_dims >= 1")
        _check_nonnegative(
            "Nuisances",
            massive_scale=self.massive_scale,
            massive_jitter=self.massive_jitter,
            scale_sigma=self.scale_sigma,
            offset_sd=self.offset_sd,
            subject_sd=self.subject_sd,
            attribute_sd=self.attribute_sd,
            pair_sd=self.pair_sd,
            homogeneous_tightness=self.homogeneous_tightness,
            homogeneous_shift=self.homogeneous_shift,
            length_tightening=self.length_tightening,
            attribute_length_sd=self.attribute_length_sd,
        )
        if not self.homogeneous_length_factor > 0:
            raise ValueError(
                f"Nuisances.homogeneous_length_factor must be > 0, got "
                f"{self.homogeneous_length_factor}"
            )


# The nuisances every built-in claim's calibration plants unless a scenario says otherwise:
# per-dimension scales (log-sd 0.15) and offsets (0.2), crossed subject and attribute effects
# (0.3 each) and a pair interaction (0.2), all in bulk units: what any residual stream adds
# to its bulk besides massive dims, which scenarios add where they matter.
REALISTIC = Nuisances(
    scale_sigma=0.15, offset_sd=0.2, subject_sd=0.3, attribute_sd=0.3, pair_sd=0.2
)


@dataclass(frozen=True)
class SideModes:
    """Planted secondary modes left and right of the bulk, per pair and layer.

    ``left[l]`` / ``right[l]`` is the expected number of modes per pair at layer l; a pair's
    count is Binomial(trials, count / trials), independent across pairs, layers and sides.
    Binomial rather than Poisson: the count is bounded (so are the coordinates and
    positions it needs) and count == trials (or 0) plants an exact count in every pair.
    Mode j (0-based) of a side sits at -/+ (position + j * spacing) bulk units: the pair's
    sentences put ``dims_per_mode`` coordinates there (the same coordinates in every
    sentence of every pair, as real outlier dimensions), plus N(0, jitter) noise, replacing
    the bulk there. dims_per_mode 1-2 is an "outlier-dimension mode" (22-44 of the 12,672
    pooled values); ~30 a "mixture mode" (a component holding ~5 % of the values).
    Beware: mixture modes inflate the sample's sd, and the study's sd-tied KDE bandwidth
    (4.5 x Scott) then swallows them: with dims_per_mode 30 and the default position and
    spacing (2 left + 1 right modes) it is ~5 bulk units and ``stats.modes.find_modes``
    finds none; with dims_per_mode 1-10 it finds all of them. Massive dims (``Nuisances``)
    dominate the range and bandwidth in the same way, so that it counts only them.
    ``attributes``: only pairs with these attributes get modes (None: all).
    """

    left: tuple[float, ...]
    right: tuple[float, ...]
    position: float = 15.0
    spacing: float = 10.0
    jitter: float = 1.0
    dims_per_mode: int = 1
    trials: int = 3
    attributes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("left", "right"):
            values = np.asarray(getattr(self, name), dtype=float).ravel()
            if values.size == 0 or not np.all(np.isfinite(values)):
                raise ValueError(f"SideModes.{name} must be a non-empty array of finite counts")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if len(self.left) != len(self.right):
            raise ValueError(
                f"SideModes.left and right must have the same length (one per layer), got "
                f"{len(self.left)} and {len(self.right)}"
            )
        if self.trials < 1 or self.dims_per_mode < 1:
            raise ValueError("SideModes.trials and dims_per_mode must be >= 1")
        counts = np.array(self.left + self.right)
        if counts.min() < 0 or counts.max() > self.trials:
            raise ValueError(
                f"SideModes counts must be in [0, trials={self.trials}], got "
                f"{counts.min():g}..{counts.max():g}"
            )
        _check_nonnegative("SideModes", position=self.position, spacing=self.spacing)
        _check_nonnegative("SideModes", jitter=self.jitter)
        if self.attributes is not None:
            object.__setattr__(self, "attributes", tuple(self.attributes))

    @property
    def n_layers(self) -> int:
        return len(self.left)

    def offsets(self) -> np.ndarray:
        """Distance of mode j = 0..trials-1 from the bulk centre, bulk units."""
        return self.position + self.spacing * np.arange(self.trials)


def rising(start: float, end: float, n_layers: int) -> np.ndarray:
    """Expected counts linear in depth from ``start`` (first layer) up to ``end`` (last)."""
    if end < start:
        raise ValueError(f"rising needs end >= start, got {start} -> {end}")
    return np.linspace(start, end, n_layers)


def falling(start: float, end: float, n_layers: int) -> np.ndarray:
    """Expected counts linear in depth from ``start`` down to ``end``."""
    if end > start:
        raise ValueError(f"falling needs end <= start, got {start} -> {end}")
    return np.linspace(start, end, n_layers)


def constant(value: float, n_layers: int) -> np.ndarray:
    return np.full(n_layers, float(value))


def rise_then_cliff(
    peak: float,
    peak_layer_fraction: float = 0.6,
    *,
    n_layers: int,
    start: float = 0.0,
    cliff_start: float = 0.75,
    cliff_end: float = 0.85,
) -> np.ndarray:
    """Expected counts that rise linearly from ``start`` to ``peak`` at depth
    ``peak_layer_fraction`` (depth = layer / (n_layers - 1)), stay there, then fall to 0
    between depths ``cliff_start`` and ``cliff_end`` and stay 0: SmolLM2-135M's left count,
    which peaks around layer 18 of 30 and collapses at layers 22-24."""
    if not 0.0 < peak_layer_fraction <= cliff_start <= cliff_end <= 1.0:
        raise ValueError(
            "rise_then_cliff needs 0 < peak_layer_fraction <= cliff_start <= cliff_end <= 1"
        )
    depth = np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else np.zeros(1)
    rise = start + (peak - start) * np.clip(depth / peak_layer_fraction, 0.0, 1.0)
    width = max(cliff_end - cliff_start, 1e-12)
    keep = 1.0 - np.clip((depth - cliff_start) / width, 0.0, 1.0)
    return rise * keep


# ------------------------------------------------------------------------------ builder


def planted_set(
    data: Dataset,
    base: Base = Base(),
    nuisances: Nuisances = Nuisances(),
    side_modes: SideModes | None = None,
    seed: Any = 0,
    n_tokens: np.ndarray | None = None,
) -> ActivationSet:
    """A planted activation set for ``data`` (rows in dataset order).

    resid[l] = growth**l x (massive + offsets + scale x (bulk + crossed effects
    + homogeneous-attribute changes, with side-mode coordinates replaced)), float32.
    ``meta`` records every parameter plus what was drawn where it is needed to check a
    claim (``meta['planted']``: massive dims and magnitudes per layer, side-mode
    coordinates, per-pair mode counts in ``synthetic.pair_rows`` order).
    ``n_tokens``: the sentences' token counts (``sentence_tokens`` of another seed: the same
    sentences read under another token selection); drawn from ``seed`` when None.
    """
    n_layers, d = base.n_layers, base.d_model
    unit = bulk_unit(base.sampler)
    frame = data.frame.reset_index(drop=True)
    n = len(frame)
    attributes = frame["attribute"].to_numpy()
    known = set(attributes)
    if nuisances.homogeneous_attribute is not None and nuisances.homogeneous_attribute not in known:
        raise ValueError(
            f"homogeneous_attribute {nuisances.homogeneous_attribute!r} is not an attribute "
            f"of the dataset ({sorted(known)})"
        )
    if side_modes is not None:
        if side_modes.n_layers != n_layers:
            raise ValueError(
                f"side-mode shapes have {side_modes.n_layers} layers; base.n_layers is {n_layers}"
            )
        missing = sorted(set(side_modes.attributes or ()) - known)
        if missing:
            raise ValueError(f"SideModes.attributes not in the dataset: {missing}")
    n_mode_coords = 0 if side_modes is None else 2 * side_modes.trials * side_modes.dims_per_mode
    n_massive = nuisances.massive_dims + int(nuisances.massive_moving)
    if n_mode_coords + n_massive > d:
        raise ValueError(
            f"{n_mode_coords} side-mode and {n_massive} massive coordinates do not fit in "
            f"d_model={d}"
        )

    (
        s_bulk,
        s_tokens,
        s_effects,
        s_homogeneous,
        s_modes,
        s_scale,
        s_offsets,
        s_massive,
        s_layout,
    ) = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(9))
    draw = SAMPLERS[base.sampler]
    subject_index = pd.factorize(frame["subject"])[0]
    attribute_index = pd.factorize(frame["attribute"])[0]
    rows_by_pair = pair_rows(data)
    pair_index = np.empty(n, dtype=np.int64)
    for p, rows in enumerate(rows_by_pair):
        pair_index[rows] = p
    homogeneous = (
        np.zeros(n, dtype=bool)
        if nuisances.homogeneous_attribute is None
        else attributes == nuisances.homogeneous_attribute
    )
    # Side modes take the first coordinates of a fixed permutation, massive dims its last:
    # they never overlap, and switching one on does not move the other.
    layout = s_layout.permutation(d)
    mode_coords = layout[:n_mode_coords]
    massive_pool = layout[d - n_massive :] if n_massive else layout[:0]

    # Copy probability: two layers share a coordinate's persistent draw with probability
    # keep**2 = layer_corr, which is then their correlation.
    keep = math.sqrt(base.layer_corr)
    persistent = draw(s_bulk, (n, d))
    indices = (subject_index, attribute_index, pair_index)
    effects = _crossed_effects(s_effects, nuisances, unit, base.layer_corr, n_layers, d, indices)
    shift = (
        s_homogeneous.normal(0.0, nuisances.homogeneous_shift * unit, d)
        if homogeneous.any() and nuisances.homogeneous_shift > 0
        else None
    )
    counts = _mode_counts(s_modes, side_modes, rows_by_pair, attributes, n_layers)
    scale = (
        np.exp(s_scale.normal(0.0, nuisances.scale_sigma, d)) if nuisances.scale_sigma > 0 else None
    )
    offsets = (
        s_offsets.normal(0.0, nuisances.offset_sd * unit, d) if nuisances.offset_sd > 0 else None
    )
    massive = _massive_plan(s_massive, nuisances, massive_pool, n_layers)
    if n_tokens is None:
        n_tokens = _token_counts(s_tokens, base, nuisances, homogeneous, attribute_index)
    tightening = (
        (n_tokens / np.median(n_tokens)) ** -nuisances.length_tightening
        if nuisances.length_tightening > 0
        else None
    )

    resid = np.empty((n_layers, n, d), dtype=np.float32)
    for layer in range(n_layers):
        block = persistent.copy() if keep >= 1.0 else draw(s_bulk, (n, d))
        if 0.0 < keep < 1.0:
            copy = s_bulk.random((n, d), dtype=np.float32) < keep
            np.copyto(block, persistent, where=copy)
        if tightening is not None:
            block *= tightening[:, None].astype(np.float32)
        if homogeneous.any():
            block[homogeneous] *= nuisances.homogeneous_tightness
            if shift is not None:
                block[homogeneous] += shift
        for effect, index in effects:
            block += effect[layer][index]
        if side_modes is not None:
            assert counts is not None  # drawn whenever side_modes is set
            _plant_modes(s_modes, block, side_modes, counts, layer, pair_index, mode_coords, unit)
        if scale is not None:
            block *= scale
        if offsets is not None:
            block += offsets
        for dim, magnitude in zip(massive["dims"][layer], massive["values"][layer], strict=True):
            if magnitude:
                jitter = s_massive.normal(0.0, nuisances.massive_jitter, n)
                block[:, dim] += magnitude * unit * (1.0 + jitter)
        if base.growth != 1.0:
            block *= base.growth**layer
        resid[layer] = block

    meta: dict[str, Any] = {
        "model": "planted",
        "n_layers": n_layers,
        "d_model": d,
        "seed": seed,
        "sampler": base.sampler,
        "bulk_unit": unit,
        "base": asdict(base),
        "nuisances": asdict(nuisances),
        "side_modes": None if side_modes is None else _listed(asdict(side_modes)),
        "planted": {
            "massive_dims": massive["dims"],
            "massive_magnitudes": massive["values"],
            "mode_coordinates": {
                side: [
                    mode_coords[_slot(side_modes, side, j)].tolist()
                    for j in range(side_modes.trials)
                ]
                for side in ("left", "right")
            }
            if side_modes is not None
            else None,
            "left_counts": None if counts is None else counts[0].tolist(),
            "right_counts": None if counts is None else counts[1].tolist(),
        },
    }
    return ActivationSet(resid, n_tokens, meta)


def _listed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_listed(v) for v in value]
    return value


def _crossed_effects(
    rng: np.random.Generator,
    nuisances: Nuisances,
    unit: float,
    layer_corr: float,
    n_layers: int,
    d: int,
    indices: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(effects (n_layers, n_levels, d), row -> level)] for each crossed effect switched on;
    each level's vector is N(0, sd) per coordinate at every layer, layers correlated by
    layer_corr (a Gaussian persistent + fresh sum, which keeps them Gaussian)."""
    out = []
    sds = (nuisances.subject_sd, nuisances.attribute_sd, nuisances.pair_sd)
    for sd, index in zip(sds, indices, strict=True):
        if sd <= 0:
            continue
        levels = int(index.max()) + 1
        common = rng.standard_normal((1, levels, d))
        fresh = rng.standard_normal((n_layers, levels, d))
        z = math.sqrt(layer_corr) * common + math.sqrt(1.0 - layer_corr) * fresh
        out.append(((sd * unit * z).astype(np.float32), index))
    return out


def _mode_counts(
    rng: np.random.Generator,
    side_modes: SideModes | None,
    rows_by_pair: list[np.ndarray],
    attributes: np.ndarray,
    n_layers: int,
) -> np.ndarray | None:
    """(2, n_layers, n_pairs) planted counts (left, right)."""
    if side_modes is None:
        return None
    n_pairs = len(rows_by_pair)
    p = np.array([side_modes.left, side_modes.right]) / side_modes.trials  # (2, n_layers)
    counts = rng.binomial(side_modes.trials, np.broadcast_to(p[..., None], (2, n_layers, n_pairs)))
    if side_modes.attributes is not None:
        chosen = set(side_modes.attributes)
        eligible = np.array([attributes[rows[0]] in chosen for rows in rows_by_pair])
        counts[:, :, ~eligible] = 0
    return counts


def _slot(side_modes: SideModes, side: str, j: int) -> slice:
    k = side_modes.dims_per_mode
    first = (j + (side_modes.trials if side == "right" else 0)) * k
    return slice(first, first + k)


def _plant_modes(
    rng: np.random.Generator,
    block: np.ndarray,
    side_modes: SideModes,
    counts: np.ndarray,
    layer: int,
    pair_index: np.ndarray,
    mode_coords: np.ndarray,
    unit: float,
) -> None:
    k = side_modes.dims_per_mode
    for s, (side, sign) in enumerate((("left", -1.0), ("right", 1.0))):
        per_row = counts[s, layer][pair_index]
        for j, offset in enumerate(side_modes.offsets()):
            rows = np.flatnonzero(per_row > j)
            if rows.size == 0:
                continue
            coords = mode_coords[_slot(side_modes, side, j)]
            values = sign * offset * unit + rng.normal(
                0.0, side_modes.jitter * unit, (rows.size, k)
            )
            block[np.ix_(rows, coords)] = values


def _massive_plan(
    rng: np.random.Generator, nuisances: Nuisances, pool: np.ndarray, n_layers: int
) -> dict[str, list[list[Any]]]:
    """Per layer, the massive dims and their signed magnitudes (bulk units)."""
    k = nuisances.massive_dims
    if k == 0:
        return {"dims": [[] for _ in range(n_layers)], "values": [[] for _ in range(n_layers)]}
    scale = nuisances.massive_scale
    sizes = np.geomspace(scale / 3.0, scale * 3.0, k) if k > 1 else np.array([scale])
    signs = rng.choice([-1.0, 1.0], k + 1)
    early = [int(x) for x in pool[-k:]]  # the same dims whether or not they move
    dims: list[list[Any]] = []
    values: list[list[Any]] = []
    for layer in range(n_layers):
        if not nuisances.massive_moving:
            dims.append(early)
            values.append((signs[:k] * sizes).tolist())
            continue
        depth = layer / (n_layers - 1) if n_layers > 1 else 0.0
        w = float(np.clip((depth - 1.0 / 3.0) * 3.0, 0.0, 1.0))
        dims.append([*early, int(pool[0])])
        late = signs[k] * scale * 3.0 * w
        values.append([*(signs[:k] * sizes * (1.0 - 0.5 * w)).tolist(), float(late)])
    return {"dims": dims, "values": values}


def sentence_tokens(data: Dataset, base: Base, nuisances: Nuisances, seed: Any) -> np.ndarray:
    """The token counts ``planted_set`` draws for these sentences under ``seed``."""
    frame = data.frame.reset_index(drop=True)
    s_tokens = np.random.default_rng(np.random.SeedSequence(seed).spawn(9)[1])
    homogeneous = (
        np.zeros(len(frame), dtype=bool)
        if nuisances.homogeneous_attribute is None
        else frame["attribute"].to_numpy() == nuisances.homogeneous_attribute
    )
    attribute_index = pd.factorize(frame["attribute"])[0]
    return _token_counts(s_tokens, base, nuisances, homogeneous, attribute_index)


def _token_counts(
    rng: np.random.Generator,
    base: Base,
    nuisances: Nuisances,
    homogeneous: np.ndarray,
    attribute_index: np.ndarray,
) -> np.ndarray:
    factor = np.where(homogeneous, nuisances.homogeneous_length_factor, 1.0)
    median = base.tokens_median * factor
    draws = rng.lognormal(0.0, base.tokens_sigma, homogeneous.size) * median
    if nuisances.attribute_length_sd > 0:
        # Drawn after the sentences' own draws, so that sets without it keep their counts.
        per_attribute = rng.normal(0.0, nuisances.attribute_length_sd, attribute_index.max() + 1)
        draws *= np.exp(per_attribute[attribute_index])
    return np.maximum(np.rint(draws), 2).astype(np.int64)
