"""Secondary modes: a Gaussian KDE on a grid, its peaks, and per-mode characteristics.

The study's method, kept as its defaults: ``scipy.stats.gaussian_kde`` with bandwidth
4.5 x Scott's rule, evaluated on 1000 points from the sample's min to max, peaks by
``scipy.signal.find_peaks`` (prominence >= 1e-4 x max density, distance 31 grid points).

The KDE here is computed by linear binning plus FFT convolution instead of summing one
Gaussian per value per grid point: the same density to ~1e-5 of the peak height in
milliseconds instead of a second per 150k-value sample (bench/bench_modes.py).

Pitfall (DESIGN.md): the default bandwidth grows with the sample's own standard deviation
and the grid spans the sample's own range, so a few far-out values widen the kernel and
the peak ``distance`` in data units, and nearer modes merge. Compare modes across samples
at a fixed ``bandwidth`` (and ``grid``) or show the result survives it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import fft as sp_fft
from scipy import signal

from harness.stats.errors import InsufficientDataError

BW_FACTOR = 4.5
GRID_POINTS = 1000
PROMINENCE_FRAC = 1e-4
PEAK_DISTANCE = 31

# Fine binning grid: at least this many fine steps per bandwidth. With the variance
# correction in _plan (kernel_sd) the binning bias is O((step/h)^4); what is left is each
# value's own O((step/h)^2) error, averaging out over values (tests: <= 1e-5 of the peak
# from 5,000 values, 8e-5 from 50).
_STEPS_PER_BANDWIDTH = 16
# Kernel support in bandwidths: exp(-8^2 / 2) ~ 1e-14 of the kernel peak is dropped.
_KERNEL_CUTOFF = 8.0
# Fine grids longer than this would need > 128 MiB per sample: the bandwidth is then far
# below the grid step, where a 1000-point density is meaningless anyway.
_MAX_FINE_POINTS = 1 << 24
# Batch FFTs hold at most this many float64 values per chunk (~64 MiB with the spectra).
_CHUNK_VALUES = 1 << 22
# Many-sample calls clean and bin this many values at a time (~64 MiB of float64 each).
_BLOCK_VALUES = 1 << 23


Side = Literal["primary", "left", "right"]


@dataclass(frozen=True)
class Mode:
    """One KDE peak. Distances are from the primary mode; ``offset`` is signed."""

    side: Side
    position: float
    offset: float  # position - primary position, data units
    distance: float  # |offset|, data units
    distance_sd: float  # |offset| / sample std (ddof=1)
    height: float  # density at the peak
    rel_height: float  # height / primary height
    prominence: float  # scipy.signal prominence, density units
    rel_prominence: float  # prominence / primary height
    spread: float  # width at half prominence (peak_widths rel_height=0.5), data units
    spread_lo: float  # interpolated left end of that width, data units
    spread_hi: float  # interpolated right end
    volume: float  # rel_height x spread


@dataclass(frozen=True)
class ModeSummary:
    """KDE and modes of one sample. The primary is the highest interior peak: find_peaks
    never reports a grid end, so a density highest at an end has its primary inside (or,
    with no interior peak at all, no modes)."""

    n_values: int
    std: float  # sample std, ddof=1 (what Scott's rule and distance_sd use)
    bandwidth: float  # Gaussian kernel standard deviation, data units
    bw_factor: float | None  # multiplier of Scott's rule; None when the bandwidth was fixed
    grid_lo: float
    grid_hi: float
    grid_points: int
    modes: tuple[Mode, ...]  # ordered by position; empty only if the KDE has no interior peak
    n_left: int  # secondary modes left of the primary
    n_right: int
    density: np.ndarray = field(repr=False, compare=False)  # KDE on the grid, read-only

    @property
    def grid(self) -> np.ndarray:
        return np.linspace(self.grid_lo, self.grid_hi, self.grid_points)

    @property
    def primary(self) -> Mode | None:
        return next((m for m in self.modes if m.side == "primary"), None)

    @property
    def secondary(self) -> tuple[Mode, ...]:
        return tuple(m for m in self.modes if m.side != "primary")

    @property
    def n_secondary(self) -> int:
        return self.n_left + self.n_right

    def table(self) -> pd.DataFrame:
        """One row per mode, ordered by position."""
        return pd.DataFrame(
            [_mode_row(m) for m in self.modes], columns=[f.name for f in fields(Mode)]
        )


def _mode_row(mode: Mode) -> dict[str, Any]:
    return {f.name: getattr(mode, f.name) for f in fields(Mode)}


# ---------------------------------------------------------------- validation and bandwidth


def _clean(x: Any, name: str = "x") -> np.ndarray:
    """A sample as a flat float64 array; the pooled sample is 1-D whatever its shape."""
    arr = np.asarray(x, dtype=np.float64).ravel()
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf) out of {arr.size}")
    if arr.size < 2:
        raise InsufficientDataError(f"{name} has {arr.size} values; a KDE needs at least 2")
    if arr.min() == arr.max():
        raise InsufficientDataError(
            f"{name} is constant (all {arr.size} values equal {float(arr[0])!r}); "
            "a KDE needs values that differ"
        )
    return arr


def _std(x: np.ndarray) -> float:
    # ddof=1, as scipy.stats.gaussian_kde's data covariance.
    return float(np.std(x, ddof=1))


def scott_bandwidth(x: Any, factor: float = BW_FACTOR) -> float:
    """Kernel sd of ``gaussian_kde(x, bw_method=factor * n ** -0.2)``: factor x Scott x std."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"bandwidth factor must be positive and finite, got {factor!r}")
    arr = _clean(x)
    return float(factor * arr.size ** (-1 / 5) * _std(arr))


def common_bandwidth(
    samples: Sequence[Any] | Mapping[Any, Any], factor: float = BW_FACTOR
) -> float:
    """The median of the samples' own Scott bandwidths: one fixed bandwidth for comparing
    modes across samples (the median, so a few outlier-widened samples do not set it)."""
    values = samples.values() if isinstance(samples, Mapping) else samples
    widths = [scott_bandwidth(s, factor) for s in values]
    if not widths:
        raise InsufficientDataError("common_bandwidth needs at least one sample")
    return float(np.median(widths))


def _check_params(grid_points: int, prominence_frac: float, distance: int) -> None:
    if grid_points < 3:
        raise ValueError(f"grid_points must be at least 3, got {grid_points}")
    if not (math.isfinite(prominence_frac) and prominence_frac >= 0):
        raise ValueError(f"prominence_frac must be >= 0, got {prominence_frac!r}")
    if distance < 1:
        raise ValueError(f"distance must be at least 1 grid point, got {distance}")


def _resolve_grid(x: np.ndarray, grid: tuple[float, float] | None) -> tuple[float, float]:
    if grid is None:
        return float(x.min()), float(x.max())
    lo, hi = (float(g) for g in grid)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"grid must be a finite (lo, hi) with lo < hi, got {grid!r}")
    return lo, hi


def _resolve_bandwidth(n: int, std: float, bw_factor: float, bandwidth: float | None) -> float:
    if bandwidth is None:
        if not (math.isfinite(bw_factor) and bw_factor > 0):
            raise ValueError(f"bw_factor must be positive and finite, got {bw_factor!r}")
        return bw_factor * n ** (-1 / 5) * std
    h = float(bandwidth)
    if not (math.isfinite(h) and h > 0):
        raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}")
    return h


# ---------------------------------------------------------------------------------- KDE


@dataclass(frozen=True)
class _Plan:
    """Where one sample's fine grid lies: eval point g is fine index pad_lo + g * per_step."""

    lo: float
    fine_step: float
    per_step: int
    pad_lo: int
    length: int
    half_kernel: int
    kernel_sd: float
    h: float


def _plan(x_min: float, x_max: float, lo: float, hi: float, h: float, points: int) -> _Plan:
    step = (hi - lo) / (points - 1)
    per_step = max(1, math.ceil(_STEPS_PER_BANDWIDTH * step / h))
    fine = step / per_step
    cut = _KERNEL_CUTOFF * h
    # Values outside the grid still add kernel tails to it, up to the cutoff.
    pad_lo = math.ceil((lo - max(x_min, lo - cut)) / fine) if x_min < lo else 0
    pad_hi = math.ceil((min(x_max, hi + cut) - hi) / fine) if x_max > hi else 0
    length = (points - 1) * per_step + 1 + pad_lo + pad_hi
    if length > _MAX_FINE_POINTS:
        raise ValueError(
            f"bandwidth {h:.3g} is {step / h:.3g} grid steps narrow: the binned KDE would need "
            f"{length} fine points; use a wider bandwidth or a narrower grid"
        )
    return _Plan(
        lo=lo,
        fine_step=fine,
        per_step=per_step,
        pad_lo=pad_lo,
        length=length,
        half_kernel=min(math.ceil(cut / fine), length - 1),
        # Linear binning smooths like an extra kernel of variance fine^2 / 6 (the mean of
        # u(1-u) fine^2 / 2 over a value's offset u inside its bin), so the Gaussian that
        # is convolved gives it back: the result matches the exact KDE to O(fine^4).
        kernel_sd=math.sqrt(h * h - fine * fine / 6),
        h=h,
    )


def _bin(x: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Linear binning: each value's left fine index j and its share ``frac`` for j + 1
    (1 - frac stays at j). Values beyond the padded fine grid are dropped: they are more
    than the kernel cutoff from every grid point."""
    u = (x - plan.lo) / plan.fine_step + plan.pad_lo
    u = u[(u >= 0) & (u <= plan.length - 1)]
    j = np.minimum(u.astype(np.int64), plan.length - 2)  # u >= 0, so truncation is floor
    return j, u - j


def _kde_batch(xs: Sequence[np.ndarray], plans: Sequence[_Plan], points: int) -> np.ndarray:
    """Densities (len(xs), points) by one batched FFT convolution per chunk of samples."""
    out = np.empty((len(xs), points))
    order = sorted(range(len(xs)), key=lambda i: _fft_size(plans[i]))
    start = 0
    while start < len(order):
        stop = start + 1
        # Sorted by size, so a chunk's last row sets its FFT length.
        while stop < len(order) and _fft_size(plans[order[stop]]) * (stop - start + 1) <= (
            _CHUNK_VALUES
        ):
            stop += 1
        _kde_chunk(xs, plans, order[start:stop], points, out)
        start = stop
    return out


def _fft_size(plan: _Plan) -> int:
    # Linear (not circular) convolution of the fine counts with the whole kernel.
    return sp_fft.next_fast_len(plan.length + 2 * plan.half_kernel, real=True)


def _kde_chunk(
    xs: Sequence[np.ndarray], plans: Sequence[_Plan], rows: list[int], points: int, out: np.ndarray
) -> None:
    chunk = [plans[i] for i in rows]
    length = max(p.length for p in chunk)
    half = max(p.half_kernel for p in chunk)
    nfft = sp_fft.next_fast_len(length + 2 * half, real=True)
    idx, frac = zip(*(_bin(xs[i], p) for i, p in zip(rows, chunk, strict=True)), strict=True)
    flat = np.concatenate([r * length + j for r, j in enumerate(idx)])
    share = np.concatenate(frac)
    size = len(rows) * length
    counts = np.bincount(flat, weights=1 - share, minlength=size)
    counts[1:] += np.bincount(flat, weights=share, minlength=size)[:-1]
    counts = counts.reshape(len(rows), length)
    # Kernel sampled at fine-grid offsets, normalized as a density of sd kernel_sd and
    # divided by n, so that sum_j counts_j * kernel(y - g_j) is the KDE at y.
    sd = np.array([p.kernel_sd for p in chunk])[:, None]
    fine = np.array([p.fine_step for p in chunk])[:, None]
    n = np.array([xs[i].size for i in rows])[:, None]
    offsets = np.arange(-half, half + 1) * fine
    kernel = np.exp(-0.5 * (offsets / sd) ** 2) / (sd * math.sqrt(2 * math.pi) * n)
    conv = sp_fft.irfft(
        sp_fft.rfft(counts, nfft, axis=1) * sp_fft.rfft(kernel, nfft, axis=1), nfft, axis=1
    )
    for r, (i, p) in enumerate(zip(rows, chunk, strict=True)):
        # Full-convolution index of fine index k is k + half; FFT round-off can dip below 0.
        take = half + p.pad_lo + p.per_step * np.arange(points)
        out[i] = np.maximum(conv[r, take], 0.0)


def kde_grid(
    x: Any,
    *,
    bw_factor: float = BW_FACTOR,
    grid_points: int = GRID_POINTS,
    bandwidth: float | None = None,
    grid: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian KDE of ``x`` on ``grid_points`` evenly spaced points: (grid, density, h).

    ``h`` is bw_factor x Scott's rule x std(ddof=1), as ``gaussian_kde`` with
    ``bw_method = bw_factor * n ** -0.2``, unless ``bandwidth`` fixes it (absolute, data
    units). The grid spans the sample's min to max unless ``grid=(lo, hi)`` fixes it.
    """
    if grid_points < 3:
        raise ValueError(f"grid_points must be at least 3, got {grid_points}")
    s = _prepare(x, "x", bw_factor, bandwidth, grid, grid_points)
    density = _kde_batch([s.x], [s.plan], grid_points)[0]
    return np.linspace(s.plan.lo, s.hi, grid_points), density, s.plan.h


# -------------------------------------------------------------------------------- peaks


def _modes(
    density: np.ndarray,
    lo: float,
    step: float,
    std: float,
    prominence_frac: float,
    distance: int,
) -> tuple[Mode, ...]:
    peaks, props = signal.find_peaks(
        density, prominence=prominence_frac * float(density.max()), distance=distance
    )
    if peaks.size == 0:
        # The density's maximum lies on a grid end (e.g. a sample piled against its min):
        # find_peaks never reports an end point, so there is no primary to measure from.
        return ()
    prom = props["prominences"]
    widths, _, left_ips, right_ips = signal.peak_widths(
        density,
        peaks,
        rel_height=0.5,
        prominence_data=(prom, props["left_bases"], props["right_bases"]),
    )
    heights = density[peaks]
    top = int(np.argmax(heights))  # ties: the leftmost, as argmax does
    positions = lo + peaks * step
    offsets = positions - positions[top]
    rel = heights / heights[top]
    spread = widths * step
    return tuple(
        Mode(
            side="primary" if k == top else ("left" if k < top else "right"),
            position=float(positions[k]),
            offset=float(offsets[k]),
            distance=float(abs(offsets[k])),
            distance_sd=float(abs(offsets[k]) / std),
            height=float(heights[k]),
            rel_height=float(rel[k]),
            prominence=float(prom[k]),
            rel_prominence=float(prom[k] / heights[top]),
            spread=float(spread[k]),
            spread_lo=float(lo + left_ips[k] * step),
            spread_hi=float(lo + right_ips[k] * step),
            volume=float(rel[k] * spread[k]),
        )
        for k in range(peaks.size)
    )


def modes_from_density(
    density: np.ndarray,
    grid_lo: float,
    grid_hi: float,
    std: float,
    *,
    prominence_frac: float = PROMINENCE_FRAC,
    distance: int = PEAK_DISTANCE,
) -> tuple[Mode, ...]:
    """The peak step alone, on any density over an evenly spaced grid (e.g. scipy's KDE,
    or an expected KDE with planted truth); ``std`` only scales ``distance_sd``."""
    arr = np.asarray(density, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 3 or not np.all(np.isfinite(arr)):
        raise ValueError("density must be a finite 1-D array of at least 3 grid values")
    _check_params(arr.size, prominence_frac, distance)
    step = (grid_hi - grid_lo) / (arr.size - 1)
    return _modes(arr, grid_lo, step, std, prominence_frac, distance)


@dataclass(frozen=True)
class _Sample:
    x: np.ndarray
    std: float
    plan: _Plan
    hi: float
    fixed_bandwidth: bool


def _prepare(
    values: Any,
    name: str,
    bw_factor: float,
    bandwidth: float | None,
    grid: tuple[float, float] | None,
    grid_points: int,
) -> _Sample:
    x = _clean(values, name)
    std = _std(x)
    h = _resolve_bandwidth(x.size, std, bw_factor, bandwidth)
    lo, hi = _resolve_grid(x, grid)
    plan = _plan(float(x.min()), float(x.max()), lo, hi, h, grid_points)
    return _Sample(x, std, plan, hi, bandwidth is not None)


def _summary(
    s: _Sample, density: np.ndarray, bw_factor: float, prominence_frac: float, distance: int
) -> ModeSummary:
    lo, points = s.plan.lo, density.size
    modes = _modes(density, lo, (s.hi - lo) / (points - 1), s.std, prominence_frac, distance)
    density.flags.writeable = False
    return ModeSummary(
        n_values=int(s.x.size),
        std=s.std,
        bandwidth=s.plan.h,
        bw_factor=None if s.fixed_bandwidth else bw_factor,
        grid_lo=lo,
        grid_hi=s.hi,
        grid_points=points,
        modes=modes,
        n_left=sum(m.side == "left" for m in modes),
        n_right=sum(m.side == "right" for m in modes),
        density=density,
    )


def find_modes(
    x: Any,
    *,
    bw_factor: float = BW_FACTOR,
    grid_points: int = GRID_POINTS,
    bandwidth: float | None = None,
    grid: tuple[float, float] | None = None,
    prominence_frac: float = PROMINENCE_FRAC,
    distance: int = PEAK_DISTANCE,
) -> ModeSummary:
    """KDE modes of one pooled sample, with the study's defaults (see the module docstring).

    The primary mode is the highest peak; every other peak is a secondary mode on its
    ``left`` or ``right``. A fixed ``bandwidth`` (data units) overrides Scott's rule and a
    fixed ``grid=(lo, hi)`` the sample's range: both are needed to compare samples.
    """
    _check_params(grid_points, prominence_frac, distance)
    s = _prepare(x, "x", bw_factor, bandwidth, grid, grid_points)
    density = _kde_batch([s.x], [s.plan], grid_points)[0]
    return _summary(s, density, bw_factor, prominence_frac, distance)


def summarize_each(
    samples: Sequence[Any],
    *,
    bw_factor: float = BW_FACTOR,
    grid_points: int = GRID_POINTS,
    bandwidth: float | Sequence[float] | np.ndarray | None = None,
    grid: tuple[float, float] | None = None,
    prominence_frac: float = PROMINENCE_FRAC,
    distance: int = PEAK_DISTANCE,
) -> list[ModeSummary]:
    """``find_modes`` for many samples at once (the KDEs share batched FFTs).

    ``bandwidth`` may be one value for all samples or one per sample; samples may differ
    in size. A bad sample raises ValueError naming its index.
    """
    return _summarize(
        samples,
        [f"sample {i}" for i in range(len(samples))],
        bw_factor=bw_factor,
        grid_points=grid_points,
        bandwidth=bandwidth,
        grid=grid,
        prominence_frac=prominence_frac,
        distance=distance,
    )


def _summarize(
    samples: Sequence[Any],
    labels: Sequence[str],
    *,
    bw_factor: float,
    grid_points: int,
    bandwidth: Any,
    grid: tuple[float, float] | None,
    prominence_frac: float,
    distance: int,
) -> list[ModeSummary]:
    _check_params(grid_points, prominence_frac, distance)
    widths = _per_sample(bandwidth, len(samples))
    out: list[ModeSummary] = []
    block: list[_Sample] = []

    def flush() -> None:
        densities = _kde_batch([s.x for s in block], [s.plan for s in block], grid_points)
        out.extend(
            _summary(s, d, bw_factor, prominence_frac, distance)
            for s, d in zip(block, densities, strict=True)
        )
        block.clear()

    for values, label, bw in zip(samples, labels, widths, strict=True):
        try:
            block.append(_prepare(values, label, bw_factor, bw, grid, grid_points))
        except ValueError as err:
            msg = str(err) if str(err).startswith(label) else f"{label}: {err}"
            raise ValueError(msg) from err
        # Blocks bound memory: float64 copies of at most ~_BLOCK_VALUES values at a time.
        if sum(s.x.size for s in block) >= _BLOCK_VALUES:
            flush()
    flush()
    return out


def _per_sample(bandwidth: Any, n: int) -> list[float | None]:
    if bandwidth is None or np.ndim(bandwidth) == 0:
        return [bandwidth] * n
    widths: list[float | None] = [float(b) for b in bandwidth]
    if len(widths) != n:
        raise ValueError(f"got {len(widths)} bandwidths for {n} samples")
    return widths


SAMPLE_COLUMNS = (
    "n_values",
    "std",
    "bandwidth",
    "grid_lo",
    "grid_hi",
    "n_modes",
    "n_left",
    "n_right",
)


def summarize_many(
    samples: Mapping[Any, Any] | Sequence[Any],
    **options: Any,
) -> pd.DataFrame:
    """One row per (sample, mode): the sample's key (``sample``), its sample-level columns
    (SAMPLE_COLUMNS) and the mode's fields. Options are ``summarize_each``'s.

    A sample whose KDE has no interior peak gets one row with NaN mode fields, so that no
    sample silently drops out of a count.
    """
    if isinstance(samples, Mapping):
        keys, values = list(samples.keys()), list(samples.values())
    else:
        values = list(samples)  # a 2-D array gives its rows
        keys = list(range(len(values)))
    defaults = {
        "bw_factor": BW_FACTOR,
        "grid_points": GRID_POINTS,
        "bandwidth": None,
        "grid": None,
        "prominence_frac": PROMINENCE_FRAC,
        "distance": PEAK_DISTANCE,
    }
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"summarize_many got unknown options {sorted(unknown)}")
    summaries = _summarize(values, [f"sample {k!r}" for k in keys], **{**defaults, **options})
    mode_cols = [f.name for f in fields(Mode)]
    rows: list[dict[str, Any]] = []
    for key, s in zip(keys, summaries, strict=True):
        head = {
            "sample": key,
            "n_values": s.n_values,
            "std": s.std,
            "bandwidth": s.bandwidth,
            "grid_lo": s.grid_lo,
            "grid_hi": s.grid_hi,
            "n_modes": len(s.modes),
            "n_left": s.n_left,
            "n_right": s.n_right,
        }
        if not s.modes:
            rows.append({**head, **dict.fromkeys(mode_cols, np.nan)})
        rows.extend({**head, **_mode_row(m)} for m in s.modes)
    return pd.DataFrame(rows, columns=["sample", *SAMPLE_COLUMNS, *mode_cols])
