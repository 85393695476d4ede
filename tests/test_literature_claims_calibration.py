"""The literature claims (norm growth, outlier dimensions, anisotropy, Gaussian with
outliers) on planted truths: each fires on its planted effect and not on a null, and its
other branches are reachable."""

import numpy as np
import pytest

from harness import synthetic
from harness.claim import Verdict
from harness.extraction import ActivationSet
from tests.conftest import assert_same_result, claim_module

growth = claim_module("residual_norm_growth")
outliers = claim_module("outlier_dimensions")
anisotropy = claim_module("anisotropy")
gaussian = claim_module("gaussian_with_outliers")

# 20 pairs of 5 sentences: enough clusters for a pair bootstrap, small enough to be quick.
DATA = synthetic.dataset(n_subjects=5, n_attributes=4, per_pair=5)


def _evidence(tmp_path, acts):
    return synthetic.evidence(DATA, acts, tmp_path)


# ------------------------------------------------------------------ residual-norm-growth


def test_planted_geometric_growth_is_supported_and_its_rate_recovered(tmp_path):
    acts = synthetic.geometry_activations(DATA, growth=1.08, n_layers=10, seed=1)
    result = growth.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    lo, hi = result.ci
    assert lo <= 1.08 <= hi
    assert hi - lo < 0.02


@pytest.mark.parametrize("rate", [1.0, 0.95])
def test_flat_or_shrinking_norm_is_refuted(tmp_path, rate):
    acts = synthetic.geometry_activations(DATA, growth=rate, n_layers=10, seed=2)
    result = growth.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.REFUTED, result.summary()


def test_linear_not_geometric_growth_is_not_supported(tmp_path):
    # Norm proportional to 1 + 2 x layer: it grows, but the per-layer ratio falls from 3 to
    # 1.1, so a straight line in log-norm fits poorly.
    acts = synthetic.geometry_activations(DATA, growth=1.0, norm_jitter=0.02, n_layers=12)
    resid = np.asarray(acts.resid) * (1 + 2 * np.arange(12))[:, None, None]
    linear = ActivationSet(resid.astype(np.float32), acts.n_tokens, {**acts.meta, "linear": 2})
    result = growth.evaluate(_evidence(tmp_path, linear))
    assert result.verdict != Verdict.SUPPORTED, result.summary()
    assert result.ci[0] > 1  # it does grow; the geometric shape is what fails
    # ... so the p against the whole claim (growth and geometric) is large (v2: p < 0.001).
    assert result.pvalue > 0.5


def test_too_few_layers_is_inconclusive(tmp_path):
    acts = synthetic.geometry_activations(DATA, growth=1.2, n_layers=3)
    result = growth.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "layers" in result.notes[0]


# -------------------------------------------------------------------- outlier-dimensions


def test_planted_persistent_outlier_dims_are_found(tmp_path):
    acts = synthetic.geometry_activations(
        DATA, outlier_dims=(5, 77, 200), outlier_scale=40.0, d_model=256, seed=3
    )
    result = outliers.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    assert result.effect == 3
    assert "[5, 77, 200]" in result.notes[0]


def test_gaussian_bulk_has_no_outlier_dims(tmp_path):
    acts = synthetic.geometry_activations(DATA, d_model=256, seed=4)
    result = outliers.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert result.effect == 0


def test_outliers_that_move_between_layers_are_not_outlier_dims(tmp_path):
    # Large values in 3 dimensions at every layer, but different ones each layer: no
    # dimension is hit in 25% of the 6 layers, so "the same dimensions" fails.
    acts = synthetic.geometry_activations(
        DATA, outlier_dims=(5, 77, 200), outlier_scale=40.0, moving_outliers=True, d_model=256
    )
    result = outliers.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert result.tables["per_layer"]["dims_hit"].min() == 3


def test_many_outlier_dims_are_not_a_few(tmp_path):
    # 24 of 1,024 dimensions (2.3% > the 2% "few" bound), each ~6.5 RMS units.
    acts = synthetic.geometry_activations(
        DATA, outlier_dims=tuple(range(0, 960, 40)), outlier_scale=40.0, d_model=1024, seed=5
    )
    result = outliers.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert result.ci[0] > 0.02 * 1024


# ---------------------------------------------------------------------------- anisotropy


def test_shared_direction_in_two_dims_is_supported(tmp_path):
    acts = synthetic.geometry_activations(DATA, offset=2.0, offset_dims=2, d_model=128, seed=6)
    result = anisotropy.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    assert 0.7 < result.effect < 0.9  # planted ~ offset^2 / (1 + offset^2) = 0.8


def test_isotropic_residuals_are_refuted(tmp_path):
    acts = synthetic.geometry_activations(DATA, offset=0.0, d_model=128, seed=7)
    result = anisotropy.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert abs(result.effect) < 0.05
    # The top-5 share is a ratio to a cosine whose interval reaches 0: left blank, not
    # shown as a number with an interval of +-13.
    lo = result.tables["per_layer"]["cosine_ci_low"]
    share = result.tables["per_layer"]["top5_share"]
    assert (lo <= 0).any()
    assert share[lo <= 0].isna().all() and share[lo > 0].notna().all()
    assert any("share not reported" in note for note in result.notes) == (result.ci[0] <= 0)


def test_anisotropy_spread_over_all_dims_is_not_driven_by_a_few(tmp_path):
    acts = synthetic.geometry_activations(DATA, offset=2.0, offset_dims=None, d_model=128)
    result = anisotropy.evaluate(_evidence(tmp_path, acts))
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert result.ci[0] > 0.3  # anisotropic all the same
    assert result.tables["per_layer"]["top5_share"].max() < 0.3


def test_anisotropy_needs_two_attributes(tmp_path):
    data = synthetic.dataset(n_subjects=6, n_attributes=1, per_pair=4)
    acts = synthetic.geometry_activations(data, offset=2.0, offset_dims=2)
    result = anisotropy.evaluate(synthetic.evidence(data, acts, tmp_path))
    assert result.verdict == Verdict.NOT_APPLICABLE


# ---------------------------------------------------------------- gaussian-with-outliers

# Its interval is two-way over the (at most 20) fitted pairs: 6 subjects x 6 attributes keep
# enough of each in the subset for the expanded interval to be finite (4 of each are not).
GAUSSIAN_DATA = synthetic.dataset(n_subjects=6, n_attributes=6, per_pair=3)


# Two outlier dims 20x the bulk; the removal (ceil(1% of 400) = 4 dims) covers them.
OUTLIERS = {"outlier_dims": (3, 150), "outlier_scale": 20.0, "norm_jitter": 0.0, "d_model": 400}


def _gaussian_evidence(tmp_path, acts):
    return synthetic.evidence(GAUSSIAN_DATA, acts, tmp_path)


def test_gaussian_bulk_with_outlier_dims_is_supported(tmp_path):
    acts = synthetic.geometry_activations(GAUSSIAN_DATA, **OUTLIERS, seed=8)
    result = gaussian.evaluate(_gaussian_evidence(tmp_path, acts))
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    # The outliers are what the removal fixes: before it the sample is far from Gaussian.
    margin = gaussian.SPEC.thresholds["margin_nats"]
    assert result.tables["per_layer"]["gap_before"].min() > 10 * margin
    assert result.tables["per_layer"]["gap_zscored"].max() < margin


def test_logistic_bulk_with_outlier_dims_is_refuted(tmp_path):
    acts = synthetic.geometry_activations(GAUSSIAN_DATA, **OUTLIERS, sampler="logistic", seed=9)
    result = gaussian.evaluate(_gaussian_evidence(tmp_path, acts))
    assert result.verdict == Verdict.REFUTED, result.summary()


def test_half_gaussian_half_logistic_pairs_are_not_supported(tmp_path):
    acts = synthetic.geometry_activations(GAUSSIAN_DATA, **OUTLIERS, seed=10)
    resid = np.array(acts.resid)
    rng = np.random.default_rng(10)
    for i, rows in enumerate(synthetic.pair_rows(GAUSSIAN_DATA)):
        if i % 2 == 0:  # every other pair gets a logistic bulk (outlier dims kept)
            bulk = rng.logistic(0.0, 1.0, resid[:, rows].shape)
            bulk[..., [3, 150]] = resid[:, rows][..., [3, 150]]
            resid[:, rows] = bulk
    mixed = ActivationSet(resid, acts.n_tokens, {**acts.meta, "mix": "half logistic"})
    result = gaussian.evaluate(_gaussian_evidence(tmp_path, mixed))
    assert result.verdict != Verdict.SUPPORTED, result.summary()
    # half the pairs at a logistic bulk's distance (~0.008 nats per value), half at ~0
    assert 0.002 < result.effect < 0.012


@pytest.mark.parametrize("claim", [outliers, anisotropy, gaussian], ids=lambda m: m.SPEC.id)
def test_too_few_pairs_is_inconclusive(tmp_path, claim):
    small = synthetic.dataset(n_subjects=1, n_attributes=3, per_pair=5)
    acts = synthetic.geometry_activations(small, outlier_dims=(3,), offset=2.0, offset_dims=2)
    result = claim.evaluate(synthetic.evidence(small, acts, tmp_path))
    assert result.verdict == Verdict.INCONCLUSIVE, result.summary()
    assert "pairs" in result.notes[0]


def test_gaussian_refits_are_cached(tmp_path, monkeypatch):
    """A warm run reads the refits from the cache (no fit) and gives the same result."""
    acts = synthetic.geometry_activations(GAUSSIAN_DATA, **OUTLIERS, seed=8)
    cold = gaussian.evaluate(_gaussian_evidence(tmp_path, acts))

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached refit was refitted")

    monkeypatch.setattr(gaussian, "rank_many", forbidden)
    warm = gaussian.evaluate(_gaussian_evidence(tmp_path, acts))
    assert_same_result(warm, cold)
