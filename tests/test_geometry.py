"""harness.stats.geometry: each statistic against a direct computation or a planted truth."""

import numpy as np
import pytest

from harness.stats import geometry


def _groups(n_subjects: int = 4, n_attributes: int = 3, per_pair: int = 5):
    subjects = np.repeat(np.arange(n_subjects), n_attributes * per_pair)
    attributes = np.tile(np.repeat(np.arange(n_attributes), per_pair), n_subjects)
    pairs = subjects * n_attributes + attributes
    return subjects, attributes, pairs


def test_rms_normalized_rows_have_unit_rms():
    x = np.random.default_rng(0).normal(size=(7, 32)) * 50
    z = geometry.rms_normalized(x)
    np.testing.assert_allclose(np.sqrt(np.mean(z * z, axis=1)), 1.0)


def test_unrelated_cosine_matches_brute_force_with_unequal_pairs():
    rng = np.random.default_rng(1)
    subjects, attributes, _ = _groups()
    keep = rng.random(subjects.size) > 0.3  # pairs of unequal size
    subjects, attributes = subjects[keep], attributes[keep]
    x = rng.normal(size=(2, subjects.size, 24)) + np.r_[4.0, -2.0, np.zeros(22)]
    result = geometry.unrelated_cosine(x, subjects, attributes, k=2, n_resamples=20)
    for layer in range(2):
        u = x[layer] / np.linalg.norm(x[layer], axis=1, keepdims=True)
        unrelated = (subjects[:, None] != subjects[None]) & (
            attributes[:, None] != attributes[None]
        )
        assert result.cosine[layer] == pytest.approx((u @ u.T)[unrelated].mean())
        by_dim = np.array([np.outer(u[:, d], u[:, d])[unrelated].mean() for d in range(24)])
        top = np.argsort(-by_dim)[:2]
        assert result.top_dims[layer] == tuple(sorted(top))
        assert result.top_share[layer] == pytest.approx(by_dim[top].sum() / by_dim.sum())
    lo, hi = result.pooled_cosine_ci
    assert lo <= result.pooled_cosine <= hi


def test_unrelated_cosine_refuses_a_single_attribute():
    subjects, _, _ = _groups()
    x = np.random.default_rng(2).normal(size=(1, subjects.size, 8))
    with pytest.raises(ValueError, match="two subjects and attributes"):
        geometry.unrelated_cosine(x, subjects, np.zeros(subjects.size), k=1)


def test_outlier_dimensions_need_the_same_dims_in_enough_layers_and_sentences():
    rng = np.random.default_rng(3)
    subjects, attributes, pairs = _groups()
    x = rng.normal(size=(8, pairs.size, 128))
    x[:, :, 10] = 30.0  # every layer, every sentence: an outlier dimension
    x[:2, :, 20] = 30.0  # 2 of 8 layers = 25%: just meets the layer criterion
    x[:1, :, 30] = 30.0  # 1 of 8 layers: not systematic
    x[:, :2, 40] = 30.0  # every layer but 2 of 60 sentences (3% < 6%): not hit
    result = geometry.outlier_dimensions(x, subjects, attributes, n_resamples=200)
    assert result.dims == (10, 20)
    assert result.hit[:, 10].all() and not result.hit[:, 40].any()
    assert result.selection_rate[10] == 1.0
    lo, hi = result.confidence_interval
    assert lo <= 2 <= hi


def test_outlier_normalization_reads_magnitudes_in_rms_units():
    # A stream at scale 10: every |x| > 6 on the raw scale is ordinary there.
    x = np.random.default_rng(4).normal(size=(4, 60, 64)) * 10
    design = _groups()[:2]
    assert geometry.outlier_dimensions(x, *design, n_resamples=10).n_dims == 0
    assert geometry.outlier_dimensions(x, *design, normalize=False, n_resamples=10).n_dims == 64


def test_outlier_dimensions_refuse_one_subject():
    with pytest.raises(ValueError, match="two subjects and two attributes"):
        geometry.outlier_dimensions(np.ones((2, 5, 4)), np.zeros(5), np.arange(5))


def test_massive_activations_need_both_the_absolute_and_the_relative_size():
    rng = np.random.default_rng(5)
    block = rng.normal(0.0, 0.1, size=(10, 256))
    block[:4, 7] = 500.0  # > 100 and ~7,000x the median |x| (~0.07)
    result = geometry.massive_activations(block)
    assert result.share == pytest.approx(0.4)
    assert result.dims == (7,) and result.max_dim == 7
    loud = rng.normal(0.0, 1.0, size=(10, 256))
    loud[:, 3] = 150.0  # > 100 but only ~220x the median: not massive
    assert geometry.massive_activations(loud).share == 0.0


def test_top_energy_dims_pick_the_dims_carrying_the_norm():
    block = np.random.default_rng(6).normal(size=(50, 64))
    block[:, [4, 9]] *= 25
    assert geometry.top_energy_dims(block, 2).tolist() == [4, 9]


def test_norm_growth_recovers_a_geometric_rate_and_a_poor_fit_for_a_step():
    rng = np.random.default_rng(7)
    subjects, attributes, pairs = _groups()
    layers = np.arange(12)[:, None]
    noise = np.exp(rng.normal(0.0, 0.1, (12, pairs.size)))
    fit = geometry.norm_growth(10 * 1.06**layers * noise, subjects, attributes, n_resamples=500)
    assert fit.rate == pytest.approx(1.06, abs=0.005)
    assert fit.r2_log > 0.95
    step = geometry.norm_growth(np.where(layers < 6, 10.0, 100.0) * noise, subjects, attributes)
    assert step.r2_log_ci[1] < 0.9


def test_norm_growth_interval_covers_the_truth_near_its_nominal_rate():
    # Pair-level random effects make sentences within a pair correlated; the pair bootstrap
    # must still cover the true rate ~95% of the time (binomial sd ~2%: 88% is a floor).
    rng = np.random.default_rng(8)
    subjects, attributes, pairs = _groups(n_subjects=6, n_attributes=4, per_pair=4)
    layers = np.arange(8)[:, None]
    covered = 0
    for rep in range(150):
        slopes = rng.normal(np.log(1.05), 0.01, pairs.max() + 1)[pairs]  # per-pair rates
        logs = np.log(10) + layers * slopes + rng.normal(0.0, 0.05, (8, pairs.size))
        lo, hi = geometry.norm_growth(
            np.exp(logs), subjects, attributes, n_resamples=400, seed=rep
        ).confidence_interval
        covered += lo <= 1.05 <= hi
    assert covered / 150 > 0.88


def test_norm_growth_refuses_bad_norms():
    subjects, attributes, pairs = _groups()
    with pytest.raises(ValueError, match="positive"):
        geometry.norm_growth(np.zeros((5, pairs.size)), subjects, attributes)
    with pytest.raises(ValueError, match="n_layers >= 5"):
        geometry.norm_growth(np.ones((4, pairs.size)), subjects, attributes)


def test_acceleration_is_zero_for_geometric_growth_even_after_one_jump_and_not_otherwise():
    rng = np.random.default_rng(9)
    subjects, attributes, pairs = _groups()
    layers = np.arange(12)[:, None]
    noise = np.exp(rng.normal(0.0, 0.05, (12, pairs.size)))
    geometric = 10 * 1.06**layers * noise

    def fit(norms: np.ndarray) -> geometry.NormGrowth:
        return geometry.norm_growth(norms, subjects, attributes, n_resamples=300)

    for norms in (geometric, np.where(layers > 0, 9.0, 1.0) * geometric):
        result = fit(norms)
        assert abs(result.acceleration) < 0.25
        assert -2 / 3 < result.acceleration_ci[0] <= result.acceleration_ci[1] < 2 / 3
    # the log rate doubles at the middle layer: 2 (2 - 1) / (2 + 1) = 2/3
    doubling = 10 * np.exp(
        np.log(1.06) * np.minimum(layers, 6) + 2 * np.log(1.06) * np.maximum(layers - 6, 0)
    )
    assert fit(doubling * noise).acceleration == pytest.approx(2 / 3, abs=0.1)
    assert fit((1 + 2.0 * layers) * noise).acceleration < -2 / 3  # the ratio falls from 3 to 1.1
    flat = fit(10.0 * noise)
    assert flat.acceleration_ci[1] == np.inf  # no growth: the shape is undefined
