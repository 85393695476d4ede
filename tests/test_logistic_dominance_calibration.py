"""The logistic-dominance statistic on planted truths: it fires on logistic data, it does
not fire on Gaussian data, and a half/half mixture of pairs is not called supported."""

import numpy as np
import pytest

from harness import synthetic
from harness.claim import Verdict
from harness.stats.inference import cluster_bootstrap_share
from tests.conftest import claim_module

claim = claim_module("logistic_dominance")

# Six subjects and six attributes: the two-way bootstrap widens its tails with the smaller
# factor's count (t with n - 1 df), and with 3 attributes no number of resamples bounds a 95%
# interval (the claim is then INCONCLUSIVE: three attributes cannot speak for attributes).
DATA = synthetic.dataset(n_subjects=6, n_attributes=6, per_pair=3)


@pytest.mark.parametrize(
    ("planted", "expected"),
    [("logistic", Verdict.SUPPORTED), ("normal", Verdict.REFUTED), ("t3", Verdict.REFUTED)],
)
def test_planted_family(tmp_path, planted, expected):
    # 3,072 values per sample: SSE's 10% tie band is set for samples of thousands of values
    # (at 384 a t3 sample's SSE ties with the logistic family's in 2/3 of samples).
    acts = synthetic.activations(DATA, planted, n_layers=3, d_model=1024, seed=1)
    result = claim.evaluate(synthetic.evidence(DATA, acts, tmp_path))
    assert result.verdict == expected, result.summary()


def test_half_logistic_half_normal_is_not_supported(tmp_path):
    rng = np.random.default_rng(2)
    acts = synthetic.activations(DATA, "normal", n_layers=2, d_model=1024, seed=2)
    resid = np.array(acts.resid)
    pairs = DATA.frame.groupby(["subject", "attribute"], sort=False).indices
    for i, rows in enumerate(pairs.values()):
        if i % 2 == 0:
            resid[:, rows] = rng.logistic(size=resid[:, rows].shape)
    mixed = synthetic.ActivationSet(resid, acts.n_tokens, {**acts.meta, "mix": True})
    result = claim.evaluate(synthetic.evidence(DATA, mixed, tmp_path))
    assert result.verdict != Verdict.SUPPORTED
    assert 0.3 < result.effect < 0.7


def test_too_few_pairs_is_inconclusive(tmp_path):
    small = synthetic.dataset(n_subjects=1, n_attributes=2, per_pair=4)
    acts = synthetic.activations(small, "logistic", n_layers=2, d_model=64)
    result = claim.evaluate(synthetic.evidence(small, acts, tmp_path))
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "pairs" in result.notes[0]


def test_cluster_bootstrap_covers_the_truth_at_its_nominal_rate():
    # 200 replications of 30 clusters whose true share is 0.6: a 95% interval should
    # cover 0.6 in roughly 95% of them (binomial sd ~1.5%, so 88% is a generous floor).
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(200):
        p = rng.beta(6, 4, size=30)  # cluster-level heterogeneity, mean 0.6
        hits = rng.random((30, 20)) < p[:, None]
        clusters = np.repeat(np.arange(30), 20)
        lo, hi = cluster_bootstrap_share(hits.ravel(), clusters, seed=rep).confidence_interval
        covered += lo <= 0.6 <= hi
    assert covered / 200 > 0.88


def test_bootstrap_p_value_small_only_when_share_exceeds_null():
    clusters = np.repeat(np.arange(20), 10)
    high = cluster_bootstrap_share(np.random.default_rng(1).random(200) < 0.8, clusters)
    null = cluster_bootstrap_share(np.random.default_rng(1).random(200) < 0.5, clusters)
    assert high.pvalue < 0.01
    assert null.pvalue > 0.05


def test_threshold_is_the_sources_share_for_its_own_models():
    assert claim.threshold("pythia-160m") == 0.85
    assert claim.threshold("EleutherAI/pythia-410m") == 0.85
    assert claim.threshold("gpt2-medium") == 0.42
    assert claim.threshold("smollm2-135m") == 0.5


def test_criteria_that_disagree_make_it_inconclusive(tmp_path, monkeypatch):
    """SSE putting the logistic family above and AIC below is 'criterion-dependent'."""
    acts = synthetic.activations(DATA, "logistic", n_layers=2, d_model=128, seed=3)
    evidence = synthetic.evidence(DATA, acts, tmp_path)
    real = claim.winners

    def one_sided(fits, criterion):
        won = real(fits, criterion)
        return won.assign(family="t", logistic=criterion == "sse", norm=False)

    monkeypatch.setattr(claim, "winners", one_sided)
    result = claim.evaluate(evidence)
    assert result.verdict == Verdict.INCONCLUSIVE, result.summary()
    assert "criterion-dependent" in result.notes[0]
    assert "SSE: logistic family 100.0%" in result.notes[1]
    assert "strictly best 0.0%" in result.notes[1]
    assert result.effect == 0.0  # the AIC share
