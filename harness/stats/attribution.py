"""Secondary modes in bulk units, attributed to the coordinates and sentences that make them.

The study's KDE (``stats.modes``) spans each sample's own min to max with a bandwidth tied
to its standard deviation, so a few coordinates at hundreds of bulk spreads set both the
grid and the kernel, and only their far clusters can register as modes. Here one sample
(the residual vectors of one subject/attribute pair at one layer: sentences x dimensions)
is put in **bulk units**: centred on its median and divided by its robust spread
min(sd, IQR / 1.349). The KDE's bandwidth, grid step and merge distance are fixed in those
units, so a mode means the same thing in every sample whatever its outliers.

Values beyond ``reach`` bulk units are the **far tail**, handled apart instead of
stretching the grid: per side, one group with its value count and the dimensions that put
values there (the point-mass outliers the write-up said it did not see).

Every secondary mode's **basin** (the grid between the density minima that separate it
from its neighbouring modes) is attributed: the share of the basin's values that come from
its top ``top_k`` dimensions, and the share of sentences with a value in it. A mode whose
mass comes mostly from a handful of dimensions is an **outlier-dimension mode** (a few
coordinates sitting at a common value in every sentence); one whose mass is spread over
many dimensions is a **mixture mode** (a component of the pooled distribution).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
from scipy import special

from harness.stats import modes
from harness.stats.errors import InsufficientDataError

IQR_PER_SD = 1.3489795003921634  # IQR of a standard normal

# Defaults, in bulk units (the sample's robust spread): why each is what it is.
# Half the bulk's width: a mode of 10 coordinates whose per-dimension scales differ by
# ~15% spreads over a few units, and a narrower kernel splits it into one-coordinate peaks.
BANDWIDTH = 0.5
GRID_STEP = 0.02  # 25 grid points per bandwidth
REACH = 40.0  # the planted side modes of the calibration sit 15-35 units out
MERGE = 2.0  # peaks closer than two bulk units are one mode (see BANDWIDTH)
MIN_REL_PROMINENCE = 0.2  # a dip of at least 20% of the mode's height separates it
# A mode needs values worth half a dimension (half the sentences' values): one coordinate
# sitting apart in most sentences is a mode (an outlier-dimension one), a few tail values
# gathered by the kernel are not.
MIN_DIMENSIONS = 0.5
# A peak's core (within MERGE of it) must hold more values than its flanks predict, at
# Poisson p < this: a heavy tail's chance clusters pass the other tests (t3 samples had one
# in 4 per side at 9-11 units out) and fail this one.
EXCESS_ALPHA = 1e-3
TOP_K = 3
# Top-3 dims hold three quarters of the mode's values: at most about 4 coordinates make it
# (an outlier-dimension mode). Not one half: a mode of 10 coordinates whose per-dimension
# scales differ can split into two peaks of ~5 coordinates each, whose top 3 hold 0.6.
OUTLIER_DIM_SHARE = 0.75

Kind = Literal["mixture", "outlier-dimension"]


def robust_spread(x: np.ndarray) -> float:
    """min(sd, IQR / 1.349): the bulk's width, which a few far values cannot inflate."""
    return centre_and_spread(x)[1]


def centre_and_spread(x: np.ndarray) -> tuple[float, float]:
    """The median and ``robust_spread`` of ``x`` (flattened) from one partial sort.

    The values are bit for bit ``np.median`` and the quartiles of ``np.percentile``
    (linear interpolation), tested: the mode claims take them for every sample, and three
    selections over the same values cost about three times one."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if n < 2:
        raise ValueError(f"a spread needs at least 2 values, got {n}")
    half = n // 2
    at1, at3 = 0.25 * (n - 1), 0.75 * (n - 1)  # the quartiles' fractional positions
    lo1, lo3 = int(at1), int(at3)
    hi1, hi3 = min(lo1 + 1, n - 1), min(lo3 + 1, n - 1)
    s = np.partition(x, sorted({half - 1, half, lo1, hi1, lo3, hi3}))
    median = (s[half - 1] + s[half]) / 2.0 if n % 2 == 0 else s[half]
    q1 = _interpolate(s[lo1], s[hi1], at1 - lo1)
    q3 = _interpolate(s[lo3], s[hi3], at3 - lo3)
    sd = float(np.std(x, ddof=1))
    return float(median), (min(sd, float(q3 - q1) / IQR_PER_SD) if q3 > q1 else sd)


def bulk_units(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``x`` (any shape) as robust sds from the median, with that median and spread: the
    units every mode claim reads a sample in, so a few massive values cannot rescale it."""
    centre, spread = centre_and_spread(x)
    if not spread > 0:
        raise InsufficientDataError("the sample has no spread (half its values are equal)")
    return (np.asarray(x, dtype=np.float64) - centre) / spread, centre, spread


def _interpolate(a: float, b: float, t: float) -> float:
    # numpy's own linear rule (from whichever end is nearer), so the bits match percentile
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


@dataclass(frozen=True)
class AttributedMode:
    """One secondary mode (or far-tail group) of a sample, in bulk units."""

    side: Literal["left", "right"]
    location: float  # bulk units from the primary mode (signed); far tail: median value
    rel_height: float  # density at the peak / the primary's (0 for a far-tail group)
    mass: float  # share of the sample's values in the basin
    n_values: int
    top_dims: tuple[int, ...]  # the dimensions with most values in the basin
    top_dims_share: float  # share of the basin's values from those dimensions
    sentence_share: float  # share of the sentences with a value in the basin
    far: bool  # a far-tail group beyond the reach, not a KDE peak
    kind: Kind


@dataclass(frozen=True)
class ModeAttribution:
    """The attributed secondary modes of one sample."""

    centre: float
    spread: float  # robust spread, data units (one bulk unit)
    n_values: int
    modes: tuple[AttributedMode, ...]  # left to right

    def count(self, side: str, kind: Kind | None = "mixture") -> int:
        """Modes (far-tail groups included) on ``side`` of ``kind`` (None: any)."""
        return sum(m.side == side and (kind is None or m.kind == kind) for m in self.modes)


def attribute_modes(
    block: np.ndarray,
    *,
    bandwidth: float = BANDWIDTH,
    grid_step: float = GRID_STEP,
    reach: float = REACH,
    merge: float = MERGE,
    min_rel_prominence: float = MIN_REL_PROMINENCE,
    min_dimensions: float = MIN_DIMENSIONS,
    excess_alpha: float = EXCESS_ALPHA,
    top_k: int = TOP_K,
    outlier_dim_share: float = OUTLIER_DIM_SHARE,
    drop_dims: np.ndarray | None = None,
) -> ModeAttribution:
    """Secondary modes of ``block`` (sentences x dimensions, pooled), attributed.

    ``drop_dims``: dimensions left out before anything is computed (e.g. the top few
    outlier dimensions, to see whether a mode survives without them). Every distance is in
    bulk units (see the module docstring)."""
    block = np.asarray(block, dtype=np.float64)
    if block.ndim != 2:
        raise ValueError(f"expected a (sentences, dimensions) array, got shape {block.shape}")
    if not np.all(np.isfinite(block)):
        raise ValueError("the block contains NaN or infinite values")
    if not (bandwidth > 0 and 0 < grid_step <= bandwidth and reach > 4 * bandwidth):
        raise ValueError(
            f"need 0 < grid_step <= bandwidth < reach / 4; got grid_step={grid_step}, "
            f"bandwidth={bandwidth}, reach={reach}"
        )
    dims = np.arange(block.shape[1])
    if drop_dims is not None and len(drop_dims):
        keep = np.setdiff1d(dims, np.asarray(drop_dims, dtype=int))
        block, dims = block[:, keep], dims[keep]
    n_sentences, n_dims = block.shape
    if n_sentences * n_dims < 100:
        raise InsufficientDataError(
            f"{n_sentences * n_dims} values; mode attribution needs at least 100"
        )
    u, centre, spread = bulk_units(block)
    inner = np.abs(u) <= reach
    min_values = max(1, int(np.ceil(min_dimensions * n_sentences)))
    points = round(2 * reach / grid_step) + 1
    summary = modes.find_modes(
        u[inner],
        bandwidth=bandwidth,
        grid=(-reach, reach),
        grid_points=points,
        # Not 0: the FFT's rounding makes peaks of ~1e-17 of the maximum where no value is.
        prominence_frac=1e-9,
        distance=max(1, round(merge / grid_step)),
    )
    grid, density = summary.grid, summary.density
    peaks = [
        m
        for m in summary.modes
        if m.side == "primary" or m.prominence >= min_rel_prominence * m.height
    ]
    out: list[AttributedMode] = []
    n_values = u.size
    primary = next((m for m in peaks if m.side == "primary"), None)
    if primary is not None:
        out.extend(
            _kde_modes(
                u,
                inner,
                grid,
                density,
                peaks,
                primary,
                dims,
                min_values,
                merge,
                excess_alpha,
                top_k,
                outlier_dim_share,
            )
        )
    for side, beyond in (("left", u < -reach), ("right", u > reach)):
        if beyond.sum() >= min_values:
            out.append(
                _group(
                    side,
                    float(np.median(u[beyond])),
                    0.0,
                    beyond,
                    dims,
                    n_values,
                    top_k,
                    outlier_dim_share,
                    far=True,
                )
            )
    out.sort(key=lambda m: m.location)
    return ModeAttribution(centre, spread, n_values, tuple(out))


def _kde_modes(
    u: np.ndarray,
    inner: np.ndarray,
    grid: np.ndarray,
    density: np.ndarray,
    peaks: list[modes.Mode],
    primary: modes.Mode,
    dims: np.ndarray,
    min_values: int,
    merge: float,
    excess_alpha: float,
    top_k: int,
    outlier_dim_share: float,
) -> list[AttributedMode]:
    positions = np.array([m.position for m in peaks])
    index = np.searchsorted(grid, positions)
    # Basin edges: the density minimum between each pair of neighbouring kept peaks.
    valleys = [grid[a + int(np.argmin(density[a : b + 1]))] for a, b in itertools.pairwise(index)]
    edges = np.concatenate([[-np.inf], valleys, [np.inf]])
    inner_values = u[inner]  # what the KDE saw: the flank test counts the same values
    out = []
    for k, mode in enumerate(peaks):
        if mode is primary:
            continue
        member = inner & (u > edges[k]) & (u <= edges[k + 1])
        # Its values must gather near the peak, not only fill the basin: a sparse tail's
        # isolated values make peaks whose basins reach far and hold many values.
        core = np.abs(u - mode.position) <= merge
        n_core = int((member & core).sum())
        if member.sum() < min_values or n_core < min_values:
            continue
        if _excess_pvalue(inner_values, mode.position, merge, n_core) >= excess_alpha:
            continue
        out.append(
            _group(
                mode.side,
                mode.position - primary.position,
                mode.height / primary.height,
                member,
                dims,
                u.size,
                top_k,
                outlier_dim_share,
                far=False,
            )
        )
    return out


def _excess_pvalue(u: np.ndarray, position: float, merge: float, n_core: int) -> float:
    """P(Poisson >= n_core) where the mean is the core's count predicted by its flanks, the
    two windows of the same width on either side of the core."""
    # np.intp counts, typed as int so that max() against 0.5 yields a number
    left = cast(int, np.count_nonzero((u >= position - 3 * merge) & (u < position - merge)))
    right = cast(int, np.count_nonzero((u > position + merge) & (u <= position + 3 * merge)))
    # The geometric mean: exact for an exponentially falling tail, and a mode beside the bulk
    # (whose inner flank lies in the bulk's own flank) is judged by both flanks, not the
    # bulk's. An empty flank counts as half a value.
    expected = float(np.sqrt(max(left, 0.5) * max(right, 0.5)))
    # scipy.stats.poisson.sf's own formula (pdtrc), without the ~0.4 ms of its generic
    # argument handling per call, which was an eighth of a calibration rep
    return float(special.pdtrc(n_core - 1, expected)) if n_core >= 1 else 1.0


def _group(
    side: str,
    location: float,
    rel_height: float,
    member: np.ndarray,
    dims: np.ndarray,
    n_values: int,
    top_k: int,
    outlier_dim_share: float,
    *,
    far: bool,
) -> AttributedMode:
    per_dim = member.sum(axis=0)
    order = np.argsort(per_dim, kind="stable")[::-1][:top_k]
    n = int(per_dim.sum())
    share = float(per_dim[order].sum() / n)
    return AttributedMode(
        side=side,  # type: ignore[arg-type]  # "left" or "right" by construction
        location=float(location),
        rel_height=float(rel_height),
        mass=n / n_values,
        n_values=n,
        top_dims=tuple(int(dims[i]) for i in order if per_dim[i] > 0),
        top_dims_share=share,
        sentence_share=float(member.any(axis=1).mean()),
        far=far,
        kind="outlier-dimension" if share >= outlier_dim_share else "mixture",
    )
