"""harness.stats.attribution: modes in bulk units, attributed to dimensions, on planted
samples of the reports' size (22 sentences x 576 dimensions)."""

import numpy as np
import pytest

from harness.stats.attribution import (
    IQR_PER_SD,
    attribute_modes,
    bulk_units,
    centre_and_spread,
    robust_spread,
)
from harness.stats.errors import InsufficientDataError

N, D = 22, 576


def _bulk(sampler: str = "logistic", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if sampler == "t3":
        return rng.standard_t(3, size=(N, D))
    return rng.logistic(size=(N, D)) if sampler == "logistic" else rng.normal(size=(N, D))


def _with_mode(x: np.ndarray, dims: int, at: float, seed: int = 1) -> np.ndarray:
    """``dims`` coordinates of every sentence moved to ``at`` bulk units (jitter 1 unit)."""
    rng = np.random.default_rng(seed)
    spread = robust_spread(x)
    columns = rng.choice(D, size=dims, replace=False)
    x = x.copy()
    x[:, columns] = np.median(x) + spread * (at + rng.normal(size=(N, dims)))
    return x


def test_centre_and_spread_are_bit_for_bit_numpys_median_and_quartiles():
    # The calibration records were measured with np.median and np.percentile; the one-sort
    # form must give the same bits (sizes odd and even, ties, heavy tails, tiny samples).
    rng = np.random.default_rng(0)
    for trial in range(2000):
        n = int(rng.integers(2, 60)) if trial % 2 else int(rng.integers(1000, 13000))
        x = [
            rng.normal(size=n) * 10 ** rng.uniform(-3, 3),
            np.round(rng.normal(size=n), 1),
            rng.integers(0, 4, n).astype(float),
            rng.standard_t(2, n),
        ][trial % 4]
        sd = float(np.std(x, ddof=1))
        q1, q3 = np.percentile(x, [25, 75])
        spread = min(sd, float(q3 - q1) / IQR_PER_SD) if q3 > q1 else sd
        assert centre_and_spread(x) == (float(np.median(x)), spread)


def test_a_spread_needs_two_values():
    with pytest.raises(ValueError, match="at least 2 values"):
        centre_and_spread(np.array([1.0]))


@pytest.mark.parametrize("sampler", ["logistic", "normal", "t3"])
def test_no_modes_in_a_single_bulk(sampler):
    for seed in range(10):
        assert attribute_modes(_bulk(sampler, seed)).modes == (), (sampler, seed)


def test_a_mode_of_many_dimensions_is_a_mixture_mode_on_its_side():
    x = _with_mode(_with_mode(_bulk(), 30, -15.0, seed=2), 30, 20.0, seed=3)
    found = attribute_modes(x)
    assert [(m.side, m.kind) for m in found.modes] == [
        ("left", "mixture"),
        ("right", "mixture"),
    ]
    left, right = found.modes
    assert abs(left.location + 15) < 2 and abs(right.location - 20) < 2
    assert left.top_dims_share < 0.2 and left.sentence_share == 1.0
    assert abs(left.mass - 30 / D) < 0.01


def test_a_mode_of_one_dimension_is_an_outlier_dimension_mode_and_goes_with_it():
    x = _with_mode(_bulk(), 1, 12.0)
    found = attribute_modes(x)
    assert [(m.side, m.kind) for m in found.modes] == [("right", "outlier-dimension")]
    (mode,) = found.modes
    assert mode.top_dims_share == 1.0 and len(mode.top_dims) == 1
    assert attribute_modes(x, drop_dims=np.array(mode.top_dims)).modes == ()


def test_far_coordinates_are_a_far_group_not_a_stretched_grid():
    """A massive coordinate at 500 bulk units does not move the grid or the kernel: a mode
    of many dimensions near the bulk is still found beside it."""
    x = _with_mode(_bulk(), 30, 15.0, seed=4)
    x[:, 7] = np.median(x) + 500 * robust_spread(x)
    found = attribute_modes(x)
    far = [m for m in found.modes if m.far]
    near = [m for m in found.modes if not m.far]
    assert [(m.side, m.kind, m.top_dims) for m in far] == [("right", "outlier-dimension", (7,))]
    assert [(m.side, m.kind) for m in near] == [("right", "mixture")]


def test_bulk_units_make_the_result_scale_free():
    x = _with_mode(_bulk(), 30, -15.0)
    a, b = attribute_modes(x), attribute_modes(1000 * x + 42)
    assert [(m.side, m.kind, m.n_values) for m in a.modes] == [
        (m.side, m.kind, m.n_values) for m in b.modes
    ]


def test_bulk_units_are_robust_sds_from_the_median():
    x = _with_mode(_bulk("t3"), dims=10, at=8.0)
    x[0, 0] = 1e4  # a massive value moves neither the centre nor the unit
    u, centre, spread = bulk_units(x)
    assert (centre, spread) == (float(np.median(x)), robust_spread(x))
    assert u.shape == x.shape
    assert np.array_equal(u, (x - np.median(x)) / robust_spread(x))
    with pytest.raises(InsufficientDataError, match="no spread"):
        bulk_units(np.full(50, 2.0))


def test_bad_input():
    with pytest.raises(ValueError, match="sentences, dimensions"):
        attribute_modes(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        attribute_modes(np.full((20, 20), np.nan))
    with pytest.raises(InsufficientDataError, match="at least 100"):
        attribute_modes(np.ones((5, 5)))
    with pytest.raises(InsufficientDataError, match="no spread"):
        attribute_modes(np.ones((20, 20)))
    with pytest.raises(ValueError, match="grid_step"):
        attribute_modes(_bulk(), bandwidth=0.01)
