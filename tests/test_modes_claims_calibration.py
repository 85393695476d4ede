"""The final-layer-bimodality and left-modes-decline statistics on planted truths.

Bimodality: a symmetric bimodal final layer is SUPPORTED for pythia-160m and REFUTED for any
other model; a unimodal one the other way round; small side modes, heavy tails and skew are
not "bimodal"; a bimodal middle layer is noted. Left modes: a planted decline of the left
count (of mixture modes) is SUPPORTED, a constant count or an equal decline on both sides is
not, a rising left count is REFUTED, and neither one-coordinate modes nor a decline that only
the study's bandwidth pitfall makes count.
Sizes: 12 pairs (4 subjects x 3 attributes), 6-8 sentences, 128-256 coordinates, 5-6 layers.
bench/calibrate_modes.py measures power and false-positive rates over many datasets.
"""

import numpy as np
import pytest

from harness import synthetic
from harness.claim import Verdict
from harness.extraction import ActivationSet
from harness.stats.inference import bootstrap_mean, cluster_slopes
from tests.conftest import claim_module

bimodality = claim_module("final_layer_bimodality")
left_modes = claim_module("left_modes_decline")

BI_DATA = synthetic.dataset(n_subjects=4, n_attributes=3, per_pair=6)
# Six subjects x five attributes: a two-way bootstrap needs several of each (with three
# attributes its expanded interval is unbounded).
LEFT_DATA = synthetic.dataset(n_subjects=6, n_attributes=5, per_pair=8)
N_PAIRS = 30


def bi_run(tmp_path, model, data=BI_DATA, acts=None, **planted):
    acts = acts or synthetic.bimodal_activations(data, **planted)
    return bimodality.evaluate(synthetic.evidence(data, acts, tmp_path, model=model))


# ------------------------------------------------------------------ final-layer-bimodality


@pytest.mark.parametrize("model", ["pythia-160m", "EleutherAI/pythia-160m"])
def test_symmetric_bimodal_final_layer_is_supported_for_pythia_160m(tmp_path, model):
    result = bi_run(tmp_path, model, seed=1)
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    assert result.effect == 1.0 and result.ci[0] > 0.5 and result.pvalue < 0.01
    pairs = result.tables["final_layer_pairs"]
    assert pairs["symmetric"].all() and (pairs["height_ratio"] > 0.8).all()
    layers = result.tables["per_layer"]
    assert list(layers["share_bimodal"]) == [0.0, 0.0, 0.0, 0.0, 1.0]
    numeric = layers.drop(columns=["layer", "state"])
    assert ((numeric >= 0) & (numeric <= 1)).all().all()  # the report plots shares in [0, 1]
    assert list(layers["state"]) == ["unimodal"] * 4 + ["bimodal"]
    assert any("4 other layers: 0 bimodal, 4 unimodal" in note for note in result.notes)


def test_symmetric_bimodal_final_layer_is_refuted_for_other_models(tmp_path):
    result = bi_run(tmp_path, "gpt2", seed=1)
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert "the final layer is symmetric bimodal" in result.notes[0]
    assert "unimodal final layer" in result.notes[0]


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt2", Verdict.SUPPORTED), ("pythia-160m", Verdict.REFUTED)]
)
def test_unimodal_final_layer(tmp_path, model, expected):
    result = bi_run(tmp_path, model, bimodal_layers=(), seed=2)
    assert result.verdict == expected, result.summary()
    assert result.effect == 0.0 and result.ci[1] < 0.5


@pytest.mark.parametrize("sampler", ["t3", "normal"])
def test_heavy_tails_are_not_bimodal(tmp_path, sampler):
    result = bi_run(tmp_path, "pythia-160m", bimodal_layers=(), sampler=sampler, seed=3)
    assert result.verdict != Verdict.SUPPORTED, result.summary()


def test_small_side_modes_are_not_major_modes(tmp_path):
    # The study's secondary modes: compact clusters of a few coordinates far out. The KDE
    # finds them, but they are neither high nor heavy enough to make a sample bimodal.
    attributes = BI_DATA.frame["attribute"].unique()
    acts = synthetic.side_mode_activations(
        BI_DATA, dict.fromkeys(attributes, 4 / 128), jitter=0.2, d_model=128, seed=4
    )
    result = bi_run(tmp_path, "pythia-160m", acts=acts)
    assert result.verdict == Verdict.REFUTED, result.summary()
    pairs = result.tables["final_layer_pairs"]
    assert not pairs["bimodal"].any()


def test_asymmetric_bimodal_is_bimodal_but_not_symmetric():
    rng = np.random.default_rng(5)
    signs = np.where(np.arange(512) < 358, 3.0, -3.0)  # 70 / 30
    x = (signs + rng.logistic(size=(12, 512))).ravel()
    found = bimodality.resolving_modes(x, dict(bimodality.SPEC.thresholds))
    assert found.bimodal and not found.symmetric
    assert 0.3 < found.height_ratio < 0.6 and found.minor_mass == pytest.approx(0.3, abs=0.03)


def test_a_bimodal_middle_layer_refutes_no_bimodal_layer(tmp_path):
    # The whole statement is decided: for gpt2 no layer may be bimodal, so a bimodal middle
    # layer refutes it even with a unimodal final layer.
    result = bi_run(tmp_path, "gpt2", bimodal_layers=(2,), seed=6)
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert "layers [2] are bimodal" in result.notes[0], result.notes


def test_bimodality_with_too_few_pairs_is_inconclusive(tmp_path):
    data = synthetic.dataset(n_subjects=1, n_attributes=3, per_pair=6)
    result = bi_run(tmp_path, "pythia-160m", data=data, seed=7)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "only 3 subject/attribute pairs" in result.notes[0]


def test_expectation_table():
    assert bimodality.expected_bimodal("pythia-160m")
    assert bimodality.expected_bimodal("EleutherAI/Pythia-160m")
    assert not bimodality.expected_bimodal("pythia-410m")
    assert not bimodality.expected_bimodal("smollm2-135m")
    assert set(bimodality.SPEC.expectations) >= {"pythia-160m", "gpt2", "pythia-1b"}


# ---------------------------------------------------------------------- left-modes-decline


def left_run(tmp_path, left, right, seed=0, data=LEFT_DATA, dims_per_mode=10):
    acts = synthetic.mode_count_activations(
        data, left, right, seed=seed, dims_per_mode=dims_per_mode
    )
    return left_modes.evaluate(synthetic.evidence(data, acts, tmp_path))


def planted_counts(left, right, seed, n_layers=6, n_pairs=N_PAIRS):
    rng = np.random.default_rng(seed)
    return (
        synthetic.trend_counts(n_layers, n_pairs, *left, rng),
        synthetic.trend_counts(n_layers, n_pairs, *right, rng),
    )


def test_planted_left_decline_is_supported(tmp_path):
    left, right = planted_counts((0.9, 0.1, 2), (0.8, 0.8, 1), seed=10)
    result = left_run(tmp_path, left, right, seed=10)
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    assert result.effect < -0.3 and result.ci[1] < 0 and result.pvalue < 0.05
    layers = result.tables["per_layer"]
    # The attributed mixture-mode counts recover the planted ones at these settings.
    assert np.allclose(layers["left_mixture"], left.mean(axis=1), atol=0.1)
    assert np.allclose(layers["right_mixture"], right.mean(axis=1), atol=0.1)
    assert set(result.tables["parts"]["counts"]) == {"mixture", "study KDE"}


@pytest.mark.parametrize("seed", [11, 12])
def test_constant_counts_are_not_supported(tmp_path, seed):
    left, right = planted_counts((0.5, 0.5, 2), (0.8, 0.8, 1), seed=seed)
    result = left_run(tmp_path, left, right, seed=seed)
    assert result.verdict != Verdict.SUPPORTED, result.summary()


def test_equal_decline_on_both_sides_is_not_supported(tmp_path):
    left, right = planted_counts((0.9, 0.1, 1), (0.9, 0.1, 1), seed=13)
    result = left_run(tmp_path, left, right, seed=13)
    assert result.verdict != Verdict.SUPPORTED, result.summary()
    assert result.ci[1] < 0  # the left count does fall ...
    assert "right count" in result.notes[0]  # ... but the right one is not constant


def test_rising_left_count_is_refuted(tmp_path):
    left, right = planted_counts((0.1, 0.9, 2), (0.8, 0.8, 1), seed=14)
    result = left_run(tmp_path, left, right, seed=14)
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert result.ci[0] > 0


def test_a_decline_of_one_coordinate_modes_is_not_a_decline_of_mixture_modes(tmp_path):
    """Modes held by one coordinate each are outlier-dimension modes: the study's KDE counts
    them (and its counts fall), the claim's mixture counts do not."""
    left, right = planted_counts((0.9, 0.1, 2), (0.8, 0.8, 1), seed=10)
    result = left_run(tmp_path, left, right, seed=10, dims_per_mode=1)
    assert result.verdict != Verdict.SUPPORTED, result.summary()
    layers = result.tables["per_layer"]
    assert (layers["left_mixture"] == 0).all()
    assert layers["left_outlier_dim"].iloc[0] > 1.0
    assert "the study's KDE counts (not decided on): SUPPORTED" in " | ".join(result.notes)


@pytest.mark.parametrize(("n_subjects", "n_layers"), [(1, 6), (4, 2)])
def test_too_few_pairs_or_layers_is_inconclusive(tmp_path, n_subjects, n_layers):
    data = synthetic.dataset(n_subjects=n_subjects, n_attributes=3, per_pair=8)
    n_pairs = 3 * n_subjects  # one subject: 3 pairs, below the minimum of 4
    left, right = planted_counts((0.9, 0.1, 2), (0.8, 0.8, 1), 15, n_layers, n_pairs)
    result = left_run(tmp_path, left, right, data=data)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "needs at least 4 pairs and 3 layers" in result.notes[0]


def test_a_decline_made_by_the_bandwidth_pitfall_is_not_counted(tmp_path):
    # A near left mode (10 coordinates at -12) in every layer; from layer 3 on, a far right
    # mode (3 coordinates at +60) inflates each sample's sd and with it the study's
    # bandwidth, which then swallows the near mode: the study's left count falls, though
    # the planted one is constant. Counted in bulk units, it stays.
    rng = np.random.default_rng(16)
    resid = rng.logistic(size=(6, len(LEFT_DATA), 256))
    resid[:, :, :10] = -12 + rng.normal(0, 0.5, (6, len(LEFT_DATA), 10))
    resid[3:, :, 10:13] = 60 + rng.normal(0, 2.0, (3, len(LEFT_DATA), 3))
    acts = ActivationSet(resid.astype(np.float32), np.full(len(LEFT_DATA), 8), {"pitfall": 1})
    result = left_modes.evaluate(synthetic.evidence(LEFT_DATA, acts, tmp_path))
    layers = result.tables["per_layer"]
    assert layers["n_left"].iloc[:3].mean() > layers["n_left"].iloc[3:].mean()
    assert (layers["left_mixture"] == 1.0).all()
    assert result.verdict != Verdict.SUPPORTED, result.summary()


# ------------------------------------------------------------------- inference helpers


def test_cluster_slopes_and_bootstrap_mean():
    x = np.tile(np.arange(5.0), 3)
    y = np.r_[2 * np.arange(5.0), -np.arange(5.0), np.ones(5)]
    labels, slopes = cluster_slopes(x, y, np.repeat(["b", "a", "c"], 5))
    assert list(labels) == ["a", "b", "c"] and np.allclose(slopes, [-1.0, 2.0, 0.0])
    _, flat = cluster_slopes(np.ones(4), np.arange(4.0), np.zeros(4))
    assert np.isnan(flat).all()
    boot = bootstrap_mean(np.arange(1.0, 9.0), seed=0)
    assert boot.statistic == 4.5 and boot.confidence_interval[0] > 0 and boot.p_greater < 0.01
    assert boot.p_less > 0.99
    # Few units widen the interval beyond the plain percentile one.
    plain = np.quantile(
        np.arange(1.0, 9.0)[np.random.default_rng(0).integers(0, 8, (2000, 8))].mean(axis=1),
        [0.025, 0.975],
    )
    assert boot.confidence_interval[0] < plain[0] and boot.confidence_interval[1] > plain[1]
    # One seed and one unit count: the same resamples, so the CI of a difference of two
    # statistics equals the difference of paired draws.
    a, b = np.array([1.0, 3.0, 2.0, 5.0]), np.array([0.5, 1.0, 2.5, 1.0])
    joint = bootstrap_mean(a - b, seed=3)
    assert joint.statistic == pytest.approx(bootstrap_mean(a, seed=3).statistic - b.mean())


def test_bootstrap_mean_covers_the_truth_at_about_its_nominal_rate():
    # 300 replications of 12 units with mean 0 (binomial sd of the rate ~1.3 %). The plain
    # percentile interval covers ~91 % here; the expanded one should be near 95 %.
    rng = np.random.default_rng(0)
    covered = sum(
        lo <= 0.0 <= hi
        for lo, hi in (
            bootstrap_mean(rng.normal(size=12), seed=rep, n_resamples=500).confidence_interval
            for rep in range(300)
        )
    )
    assert covered / 300 > 0.92
