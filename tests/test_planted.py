"""Production-size planted sets (harness/planted.py): each nuisance measured, not assumed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import stats

from harness import dataset as dataset_module
from harness import planted
from harness.planted import Base, Nuisances, SideModes
from harness.synthetic import pair_rows

DATA = planted.production_dataset()  # 10 x 12 x 22 = 2,640 sentences
SMALL = planted.production_dataset(4, 3, 22)  # 264 sentences, keeps 'in japanese'


def robust_spread(x: np.ndarray) -> float:
    q1, q3 = np.percentile(x, [25, 75])
    return float(min(np.std(x), (q3 - q1) / 1.349))


def centroids(data, layer: np.ndarray) -> tuple[np.ndarray, float]:
    """(S, A, d) pair centroids and the within-pair per-coordinate variance."""
    s, a = len(data.subjects), len(data.attributes)
    rows = pair_rows(data)
    block = np.stack([layer[r] for r in rows]).astype(np.float64)  # (pairs, per_pair, d)
    within = float(block.var(axis=1, ddof=1).mean())
    return block.mean(axis=1).reshape(s, a, -1), within / block.shape[1]


def effect_sds(data, layer: np.ndarray, unit: float) -> tuple[float, float]:
    """Subject and attribute effect sd per coordinate, bulk units, estimated two-way from the
    pair centroids with the sentence noise's contribution taken out (0 when absent)."""
    c, noise = centroids(data, layer)
    s, a = c.shape[:2]
    subject = c.mean(axis=1).var(axis=0, ddof=1).mean() - noise / a
    attribute = c.mean(axis=0).var(axis=0, ddof=1).mean() - noise / s
    return float(np.sqrt(max(subject, 0.0))) / unit, float(np.sqrt(max(attribute, 0.0))) / unit


# ------------------------------------------------------------------------------ dataset


def test_production_dataset_has_the_default_names_and_sizes():
    default = dataset_module.load()
    assert len(DATA) == 10 * 12 * 22 == 2640
    assert DATA.subjects == default.subjects
    assert DATA.attributes == default.attributes
    assert DATA.frame["id"].is_unique
    assert (DATA.frame.groupby(["subject", "attribute"]).size() == 22).all()
    # subject-major, then attribute, then sentence
    assert list(DATA.frame["subject"][:264].unique()) == ["economics"]
    assert list(DATA.frame["attribute"][:44].unique()) == ["in english", "in spanish"]
    japanese = DATA.frame["attribute"] == "in japanese"
    assert japanese.sum() == 220
    assert not DATA.frame.loc[japanese, "text"].str.contains(" ").any()
    assert DATA.frame.loc[~japanese, "text"].str.contains(" ").all()
    small = planted.production_dataset(2, 3, 4)
    assert len(small) == 24 and "in japanese" in small.attributes
    with pytest.raises(ValueError, match="n_attributes"):
        planted.production_dataset(n_attributes=13)


# ------------------------------------------------------------------- shapes, determinism


def test_shapes_dtype_meta_and_determinism_by_seed():
    base = Base(n_layers=2)
    nuisances = Nuisances(massive_dims=2, subject_sd=0.2, homogeneous_attribute="in japanese")
    modes = SideModes(planted.constant(1, 2), planted.constant(1, 2))
    a = planted.planted_set(SMALL, base, nuisances, modes, seed=3)
    b = planted.planted_set(SMALL, base, nuisances, modes, seed=3)
    c = planted.planted_set(SMALL, base, nuisances, modes, seed=4)
    assert a.resid.shape == (2, len(SMALL), 576) and a.resid.dtype == np.float32
    assert a.n_tokens.shape == (len(SMALL),) and np.issubdtype(a.n_tokens.dtype, np.integer)
    np.testing.assert_array_equal(a.resid, b.resid)
    np.testing.assert_array_equal(a.n_tokens, b.n_tokens)
    assert not np.allclose(a.resid, c.resid)
    meta = json.loads(json.dumps(a.meta))
    assert meta["model"] == "planted" and meta["n_layers"] == 2 and meta["d_model"] == 576
    assert meta["seed"] == 3 and meta["nuisances"]["subject_sd"] == 0.2
    assert meta["side_modes"]["left"] == [1.0, 1.0] and meta["base"]["sampler"] == "logistic"


def test_switching_one_nuisance_leaves_the_rest_of_the_set_unchanged():
    base = Base(n_layers=2)
    plain = planted.planted_set(SMALL, base, seed=1)
    shifted = planted.planted_set(SMALL, base, Nuisances(offset_sd=1.0), seed=1)
    diff = shifted.resid - plain.resid  # the offsets only: constant over sentences and layers
    np.testing.assert_allclose(diff, np.broadcast_to(diff[0, :1], diff.shape), atol=1e-4)
    np.testing.assert_array_equal(plain.n_tokens, shifted.n_tokens)


# ------------------------------------------------------------------------ the plain bulk


@pytest.mark.parametrize("sampler", ["logistic", "normal", "t3"])
def test_all_nuisances_off_is_a_plain_iid_bulk(sampler):
    acts = planted.planted_set(DATA, Base(sampler=sampler, n_layers=3), seed=0)
    x = acts.resid.astype(np.float64)
    unit = planted.bulk_unit(sampler)
    assert robust_spread(x[1].ravel()) == pytest.approx(unit, rel=0.01)
    if sampler != "t3":  # t3's sd converges too slowly to check per coordinate
        per_coordinate = x[1].std(axis=0)
        assert np.median(per_coordinate) == pytest.approx(planted.SAMPLER_SD[sampler], rel=0.02)
        assert per_coordinate.std() / per_coordinate.mean() < 0.05
        expected = {"logistic": 1.2, "normal": 0.0}[sampler]  # exact marginal at every layer
        for layer in x:
            assert stats.kurtosis(layer.ravel()) == pytest.approx(expected, abs=0.06)
    assert abs(x.mean()) < 0.01
    # a sentence's coordinates are correlated across layers by layer_corr, and only that
    assert np.corrcoef(x[0].ravel(), x[2].ravel())[0, 1] == pytest.approx(0.5, abs=0.01)
    subject, attribute = effect_sds(DATA, x[0], unit)
    assert subject < 0.05 and attribute < 0.05


# ---------------------------------------------------------------------------- nuisances


def test_massive_dims_are_100_to_1000_times_the_bulk_spread():
    acts = planted.planted_set(DATA, Base(n_layers=2), Nuisances(massive_dims=3), seed=0)
    dims = acts.meta["planted"]["massive_dims"][0]
    assert len(set(dims)) == 3
    layer = acts.resid[1].astype(np.float64)
    bulk = robust_spread(np.delete(layer, dims, axis=1).ravel())
    ratios = np.abs(np.median(layer[:, dims], axis=0)) / bulk
    # the smallest sits at exactly 100 by design (range ends); 3 % for the spread estimate
    assert np.all((ratios >= 97) & (ratios <= 1000)), ratios
    assert sorted(ratios) == pytest.approx([100, 300, 900], rel=0.03)
    # fixed sign, small relative jitter per sentence
    column = layer[:, dims[-1]]
    assert np.all(np.sign(column) == np.sign(column[0]))
    assert column.std() / abs(column.mean()) == pytest.approx(0.05, rel=0.15)
    # nothing else is far out
    others = np.abs(np.delete(layer, dims, axis=1)).max(axis=0) / bulk
    assert others.max() < 20


def test_moving_massive_dims_change_the_largest_dimension_with_depth():
    nuisances = Nuisances(massive_dims=3, massive_moving=True)
    acts = planted.planted_set(SMALL, Base(n_layers=6), nuisances, seed=0)
    largest = np.abs(acts.resid).mean(axis=1).argmax(axis=1)  # per layer
    early = acts.meta["planted"]["massive_dims"][0][:3]
    assert largest[0] in early and largest[1] == largest[0]
    assert largest[-1] != largest[0] and largest[-1] not in early
    static = planted.planted_set(SMALL, Base(n_layers=6), Nuisances(massive_dims=3), seed=0)
    assert len(set(np.abs(static.resid).mean(axis=1).argmax(axis=1))) == 1


@pytest.mark.parametrize("sigma", [0.1, 0.3])
def test_scale_sigma_gives_per_dimension_spreads_of_that_log_sd(sigma):
    base = Base(n_layers=1)
    plain = planted.planted_set(DATA, base, seed=2).resid[0].std(axis=0)
    scaled = planted.planted_set(DATA, base, Nuisances(scale_sigma=sigma), seed=2)
    ratio = scaled.resid[0].std(axis=0) / plain
    assert np.log(ratio).std() == pytest.approx(sigma, rel=0.1)
    # unpaired, against the sampler's sd: sampling adds only ~0.02 to the log-sd
    alone = np.log(scaled.resid[0].std(axis=0) / planted.SAMPLER_SD["logistic"])
    assert alone.std() == pytest.approx(np.hypot(sigma, 0.02), rel=0.12)


def test_offsets_move_the_per_dimension_means():
    acts = planted.planted_set(DATA, Base(n_layers=1), Nuisances(offset_sd=2.0), seed=0)
    means = acts.resid[0].astype(np.float64).mean(axis=0)
    assert means.std() / planted.bulk_unit("logistic") == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("which", ["subject", "attribute"])
def test_crossed_effects_are_recovered_two_way_and_grow_with_their_sd(which):
    base = Base(n_layers=1)
    unit = planted.bulk_unit("logistic")
    estimates, explained = [], []
    for sd in (0.0, 0.3, 0.6):
        nuisances = Nuisances(**{f"{which}_sd": sd})
        x = planted.planted_set(DATA, base, nuisances, seed=5).resid[0].astype(np.float64)
        subject, attribute = effect_sds(DATA, x, unit)
        mine, other = (subject, attribute) if which == "subject" else (attribute, subject)
        assert other < 0.05  # the other factor stays clean
        estimates.append(mine)
        c, _ = centroids(DATA, x)
        axis = 1 if which == "subject" else 0
        explained.append(c.mean(axis=axis).var(axis=0).sum() / c.reshape(-1, 576).var(0).sum())
    assert estimates[0] < 0.05
    assert estimates[1:] == pytest.approx([0.3, 0.6], rel=0.15)
    assert explained[0] < explained[1] < explained[2]
    assert explained[2] > 0.8


def test_pair_effect_is_an_interaction_not_a_main_effect():
    unit = planted.bulk_unit("logistic")
    x = planted.planted_set(DATA, Base(n_layers=1), Nuisances(pair_sd=0.5), seed=0).resid[0]
    c, noise = centroids(DATA, x.astype(np.float64))
    residual = c - c.mean(axis=0) - c.mean(axis=1, keepdims=True) + c.mean(axis=(0, 1))
    interaction = residual.var(axis=(0, 1), ddof=0).mean() * 10 * 12 / (9 * 11) - noise
    assert np.sqrt(interaction) / unit == pytest.approx(0.5, rel=0.1)
    subject, attribute = effect_sds(DATA, x.astype(np.float64), unit)
    assert subject < 0.2 and attribute < 0.2  # only pair_sd / sqrt(12 or 10) leaks in


def test_homogeneous_attribute_is_tighter_shifted_and_longer():
    nuisances = Nuisances(
        homogeneous_attribute="in japanese", homogeneous_tightness=0.5, homogeneous_shift=1.0
    )
    acts = planted.planted_set(DATA, Base(n_layers=2), nuisances, seed=0)
    japanese = (DATA.frame["attribute"] == "in japanese").to_numpy()
    rows = pair_rows(DATA)
    x = acts.resid[1].astype(np.float64)
    spread = np.array([x[r].std(axis=0, ddof=1).mean() for r in rows])
    is_japanese = np.array([japanese[r[0]] for r in rows])
    assert spread[is_japanese].mean() / spread[~is_japanese].mean() == pytest.approx(0.5, rel=0.05)
    shift = x[japanese].mean(axis=0) - x[~japanese].mean(axis=0)
    assert shift.std() / planted.bulk_unit("logistic") == pytest.approx(1.0, rel=0.1)
    lengths = np.median(acts.n_tokens[japanese]) / np.median(acts.n_tokens[~japanese])
    assert lengths == pytest.approx(3.0, rel=0.1)
    assert np.median(acts.n_tokens[~japanese]) == pytest.approx(21, abs=1.5)
    plain = planted.planted_set(DATA, Base(n_layers=2), seed=0)
    ratio = np.median(plain.n_tokens[japanese]) / np.median(plain.n_tokens[~japanese])
    assert ratio == pytest.approx(1.0, rel=0.1)


# ---------------------------------------------------------------------------- side modes


def measured_counts(data, acts, modes: SideModes) -> np.ndarray:
    """(2, n_layers, n_pairs): per side, how many planted positions hold >= half a mode's
    values (per_pair x dims_per_mode) in the pair's pooled sample."""
    unit = acts.meta["bulk_unit"]
    rows = pair_rows(data)
    out = np.zeros((2, acts.n_layers, len(rows)), dtype=int)
    need = len(rows[0]) * modes.dims_per_mode / 2
    for layer in range(acts.n_layers):
        for p, r in enumerate(rows):
            values = acts.resid[layer, r].ravel() / unit
            for s, sign in enumerate((-1.0, 1.0)):
                for offset in modes.offsets():
                    near = np.abs(values - sign * offset) < 4 * modes.jitter
                    out[s, layer, p] += int(near.sum() >= need)
    return out


@pytest.mark.parametrize("dims_per_mode", [1, 30])
def test_side_modes_are_planted_in_the_expected_number_per_layer(dims_per_mode):
    n_layers = 4
    modes = SideModes(
        planted.falling(2.0, 0.5, n_layers),
        planted.constant(1.0, n_layers),
        dims_per_mode=dims_per_mode,
        trials=3,
    )
    acts = planted.planted_set(DATA, Base(n_layers=n_layers), side_modes=modes, seed=0)
    counts = measured_counts(DATA, acts, modes)
    np.testing.assert_array_equal(counts[0], acts.meta["planted"]["left_counts"])
    np.testing.assert_array_equal(counts[1], acts.meta["planted"]["right_counts"])
    np.testing.assert_allclose(counts[0].mean(axis=1), modes.left, atol=0.25)
    np.testing.assert_allclose(counts[1].mean(axis=1), modes.right, atol=0.25)
    assert counts[0].mean(axis=1)[0] > counts[0].mean(axis=1)[-1] + 1


def test_side_modes_with_count_equal_to_trials_are_exact_and_restricted_to_attributes():
    modes = SideModes(
        planted.constant(2.0, 2), planted.constant(0.0, 2), trials=2, attributes=("in japanese",)
    )
    acts = planted.planted_set(SMALL, Base(n_layers=2), side_modes=modes, seed=0)
    counts = measured_counts(SMALL, acts, modes)
    japanese = np.array([SMALL.frame["attribute"][r[0]] == "in japanese" for r in pair_rows(SMALL)])
    assert (counts[0][:, japanese] == 2).all() and (counts[0][:, ~japanese] == 0).all()
    assert (counts[1] == 0).all()


def test_mode_shape_helpers():
    n = 30
    shape = planted.rise_then_cliff(3.0, 0.6, n_layers=n)
    peak = int(np.argmax(shape))
    assert shape[peak] == 3.0 and abs(peak / (n - 1) - 0.6) <= 1 / (n - 1)
    assert shape[0] == 0.0 and shape[-1] == 0.0 and shape[21] == 3.0  # plateau, then cliff
    assert np.all(np.diff(shape[: peak + 1]) > 0)
    np.testing.assert_allclose(planted.rising(0, 2, 5), [0, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(planted.falling(2, 0, 3), [2, 1, 0])
    np.testing.assert_allclose(planted.constant(1.5, 3), [1.5] * 3)
    with pytest.raises(ValueError):
        planted.rising(2, 0, 3)
    with pytest.raises(ValueError):
        planted.falling(0, 2, 3)


def test_rise_then_cliff_is_measured_with_its_peak_and_cliff():
    n_layers = 8
    modes = SideModes(
        planted.rise_then_cliff(3.0, 0.6, n_layers=n_layers), planted.constant(0.0, n_layers)
    )
    acts = planted.planted_set(SMALL, Base(n_layers=n_layers, d_model=64), side_modes=modes)
    left = measured_counts(SMALL, acts, modes)[0].mean(axis=1)
    assert int(np.argmax(left)) in (4, 5)  # depth 0.57-0.71, the stated 0.6 plateau
    assert left[int(np.argmax(left))] > 2.4 and left[-1] == 0.0 and left[0] == 0.0


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Base(sampler="cauchy"), "unknown sampler"),
        (lambda: Base(layer_corr=1.5), "layer_corr"),
        (lambda: Nuisances(subject_sd=-0.1), "subject_sd"),
        (lambda: Nuisances(offset_sd=-1.0), "offset_sd"),
        (lambda: Nuisances(massive_dims=-1), "massive_dims"),
        (lambda: Nuisances(massive_moving=True), "massive_moving"),
        (lambda: SideModes((1.0, 1.0), (1.0,)), "same length"),
        (lambda: SideModes((4.0,), (0.0,), trials=3), "trials"),
        (lambda: SideModes((1.0,), (1.0,), jitter=-1.0), "jitter"),
        (
            lambda: planted.planted_set(
                SMALL, Base(n_layers=1), Nuisances(homogeneous_attribute="x")
            ),
            "homogeneous_attribute",
        ),
        (
            lambda: planted.planted_set(
                SMALL, Base(n_layers=3), side_modes=SideModes((1.0,), (1.0,))
            ),
            "layers",
        ),
        (
            lambda: planted.planted_set(
                SMALL, Base(n_layers=1), side_modes=SideModes((1.0,), (1.0,), attributes=("in x",))
            ),
            "not in the dataset",
        ),
        (
            lambda: planted.planted_set(
                SMALL,
                Base(n_layers=1, d_model=8),
                side_modes=SideModes((1.0,), (1.0,), dims_per_mode=2),
            ),
            "do not fit",
        ),
    ],
)
def test_invalid_inputs_raise_clear_value_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# ---------------------------------------------------------------------------------- speed


def test_a_full_production_set_builds_fast():
    nuisances = Nuisances(
        massive_dims=3,
        massive_moving=True,
        scale_sigma=0.2,
        offset_sd=0.5,
        subject_sd=0.3,
        attribute_sd=0.3,
        pair_sd=0.2,
        homogeneous_attribute="in japanese",
        homogeneous_shift=0.5,
    )
    modes = SideModes(planted.rising(0, 2, 4), planted.constant(1, 4), dims_per_mode=30)
    start = time.perf_counter()
    acts = planted.planted_set(DATA, Base(n_layers=4), nuisances, modes, seed=0)
    elapsed = time.perf_counter() - start
    print(f"\nfull production set (4 x 2640 x 576, all nuisances): {elapsed:.2f} s")
    assert acts.resid.shape == (4, 2640, 576) and np.isfinite(acts.resid).all()
