"""harness.stats.anomaly and the heavy-tailed-mixture-beats-gmm claim on planted truths."""

from pathlib import Path

import numpy as np
import pytest

from harness import synthetic
from harness.claim import Verdict
from harness.stats import anomaly
from tests.conftest import assert_same_result, claim_module

ROOT = Path(__file__).resolve().parents[1]


def _claim():
    return claim_module("heavy_tailed_mixture_beats_gmm")


LOCS = np.array([-6.0, 0.0, 5.0])
SCALES = np.array([0.7, 1.0, 0.5])
WEIGHTS = np.array([0.2, 0.6, 0.2])


@pytest.mark.parametrize("k", range(1, 8))
def test_logsumexp_is_bit_for_bit_numpys_reduction(k):
    # The calibration records were measured with numpy's max/sum over the last axis; the
    # hand-written form must give the same bits so those records stay what runs.
    a = np.random.default_rng(k).normal(size=(200, 5, k)) * 40
    top = a.max(axis=-1, keepdims=True)
    reduced = (top + np.log(np.exp(a - top).sum(axis=-1, keepdims=True)))[..., 0]
    assert np.array_equal(anomaly._logsumexp_last(a), reduced)


def _planted(family: str, n: int, columns: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    comp = rng.choice(3, size=(n, columns), p=WEIGHTS)
    draw = rng.logistic if family == "logistic" else rng.normal
    return draw(LOCS[comp], SCALES[comp])


@pytest.mark.parametrize("family", ["logistic", "gaussian"])
def test_em_recovers_planted_mixture(family):
    x = _planted(family, 6000)
    fit = anomaly.fit_mixture(x, family, k=3, n_iter=500)
    for column in range(2):
        order = np.argsort(fit.locs[column])
        np.testing.assert_allclose(fit.locs[column][order], LOCS, atol=0.15)
        np.testing.assert_allclose(fit.scales[column][order], SCALES, rtol=0.1)
        np.testing.assert_allclose(fit.weights[column][order], WEIGHTS, atol=0.03)
    assert fit.n_parameters == 2 * 8


@pytest.mark.parametrize("family", anomaly.FAMILIES)
def test_em_never_lowers_the_training_likelihood(family):
    x = _planted("logistic", 500, columns=3, seed=3)
    # tol=-inf: exactly n_iter iterations, so each budget continues the one before it.
    values = [
        anomaly.fit_mixture(x, family, k=3, n_iter=n, tol=-np.inf).train_loglik
        for n in range(1, 25)
    ]
    assert np.all(np.diff(values) >= -1e-9)


def test_heldout_loglik_prefers_the_planted_family():
    for truth, other in (("logistic", "gaussian"), ("gaussian", "logistic")):
        train, test = _planted(truth, 4000, seed=1), _planted(truth, 4000, seed=2)
        right = anomaly.fit_mixture(train, truth).logpdf(test).mean()
        wrong = anomaly.fit_mixture(train, other).logpdf(test).mean()
        assert right > wrong, (truth, right, wrong)


def test_logistic_density_integrates_to_one():
    fit = anomaly.fit_mixture(_planted("logistic", 2000, columns=1), "logistic")
    grid = np.linspace(-40, 40, 80001)[:, None]
    mass = np.exp(fit.logpdf(grid)).sum() * (grid[1, 0] - grid[0, 0])
    assert mass == pytest.approx(1.0, abs=1e-4)


def test_auroc_known_answers():
    rng = np.random.default_rng(0)
    assert anomaly.auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert anomaly.auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert anomaly.auroc(np.ones(5), np.ones(7)) == 0.5  # ties count one half
    null = anomaly.auroc(rng.normal(size=3000), rng.normal(size=3000))
    assert abs(null - 0.5) < 0.02
    pos, neg = rng.normal(0.5, 1, 40).round(1), rng.normal(0, 1, 30).round(1)
    brute = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
    assert anomaly.auroc(pos, neg) == pytest.approx(brute)


def test_weighted_auroc_equals_auroc_of_replicated_groups():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.3, 1, 60).round(1), rng.normal(0, 1, 50).round(1)
    pg, ng = rng.integers(0, 4, 60), rng.integers(0, 5, 50)
    u = anomaly.pair_u(pos, pg, neg, ng)
    sp, sn = np.bincount(pg, minlength=4), np.bincount(ng, minlength=5)
    assert anomaly.weighted_auroc(u, sp, sn, np.ones(4), np.ones(5))[0] == pytest.approx(
        anomaly.auroc(pos, neg)
    )
    wp, wn = np.array([2, 0, 1, 3]), np.array([1, 1, 0, 2, 1])
    replicated = anomaly.auroc(np.repeat(pos, wp[pg]), np.repeat(neg, wn[ng]))
    assert anomaly.weighted_auroc(u, sp, sn, wp, wn)[0] == pytest.approx(replicated)
    assert np.isnan(anomaly.weighted_auroc(u, sp, sn, np.zeros(4), wn)[0])


def test_split_projection_whitens_and_drops_flat_directions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6)) * np.array([5, 4, 3, 2, 1, 0.5])
    x = np.c_[x, x.sum(axis=1) * 0]  # a direction nothing varies along
    projection = anomaly.split_projection(x[:200], x[200:])
    z = projection.transform(x[200:])
    assert z.shape[1] == 6
    np.testing.assert_allclose(z.std(axis=0, ddof=1), 1.0)


def test_split_projection_is_stable_with_fewer_rotation_rows_than_dimensions():
    """A rounding-size change of the rows must not move the scores: with 30 rotation rows in
    60 dimensions the other 31 directions once came from the SVD's arbitrary completion, and
    a 1e-7 relative change of SmolLM2's activations moved the claim's effect by an interval
    width (the product density depends on the basis)."""
    rng = np.random.default_rng(5)
    spread = np.geomspace(4, 0.2, 60)
    rotation, scale = (rng.logistic(size=(n, 60)) * spread for n in (30, 200))
    test = rng.logistic(size=(50, 60)) * spread

    def scores(noise: float) -> np.ndarray:
        jitter = np.random.default_rng(6)
        a, b = (x * (1 + noise * jitter.standard_normal(x.shape)) for x in (rotation, scale))
        projection = anomaly.split_projection(a, b)
        assert projection.sd.size == 60
        np.testing.assert_allclose(
            projection.components @ projection.components.T, np.eye(60), atol=1e-9
        )
        return anomaly.fit_detector(b, "gaussian", head=4, projection=projection).score(test)

    np.testing.assert_allclose(scores(1e-7), scores(0.0), rtol=1e-5)


def test_detector_covers_every_direction_with_equal_parameter_counts():
    rng = np.random.default_rng(3)
    x = rng.logistic(size=(300, 20)) * np.geomspace(3, 0.5, 20)
    detectors = [anomaly.fit_detector(x, f, head=4) for f in anomaly.FAMILIES]
    assert {d.n_parameters for d in detectors} == {4 * 8 + 16 * 2}
    far = np.zeros((1, 20))
    far[0, -1] = 50.0  # far out along the smallest direction only
    for d in detectors:
        assert d.score(far)[0] > np.max(d.score(x))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown family"):
        anomaly.fit_mixture(np.ones((10, 1)), "cauchy")
    with pytest.raises(ValueError, match="NaN"):
        anomaly.fit_mixture(np.array([[1.0], [np.nan], [2.0]] * 4), "gaussian")
    with pytest.raises(ValueError, match="constant"):
        anomaly.fit_mixture(np.ones((20, 2)), "gaussian")
    with pytest.raises(ValueError, match="at least one positive"):
        anomaly.auroc(np.array([]), np.array([1.0]))


# --------------------------------------------------------------- the claim, calibrated

ATTRIBUTES = ("in english", "in a kind tone", "in all lower case", "in japanese", "in spanish")


def _evaluate(tmp_path, anomalous, sampler, seed=0):
    data = synthetic.language_dataset(ATTRIBUTES, n_subjects=6, per_pair=40)
    acts = synthetic.anomaly_activations(data, anomalous, sampler=sampler, d_model=64, seed=seed)
    return _claim().evaluate(synthetic.evidence(data, acts, tmp_path))


def test_claim_supported_on_planted_heavy_tails(tmp_path):
    # t3 coordinates, anomalies spread 1.4x: the logistic detector's score is the more
    # efficient one, and the logistic density fits the held-out sentences better.
    result = _evaluate(tmp_path, {"japanese": (0.0, 1.4), "spanish": (0.0, 1.4)}, "t3")
    assert result.verdict is Verdict.SUPPORTED, result.notes
    assert result.ci[0] > 0
    assert set(result.tables["per_layer_delta"]["layer"]) == {0, 1}


def test_claim_not_supported_on_planted_gaussians(tmp_path):
    # At this toy size the interval is wider than the +-0.001 equivalence margin, so an
    # honest null reads REFUTED (worse) or INCONCLUSIVE, never SUPPORTED.
    result = _evaluate(tmp_path, {"japanese": (0.0, 1.4), "spanish": (0.0, 1.4)}, "normal")
    assert result.verdict is not Verdict.SUPPORTED, result.notes
    assert result.ci[0] < 0
    assert "logistic - Gaussian: -" in result.notes[1]  # Gaussian fits held-out text better


@pytest.mark.parametrize(
    ("auroc_ci", "loglik_ci", "verdict"),
    [
        ((0.001, 0.003), (0.1, 0.2), Verdict.SUPPORTED),
        ((0.001, 0.003), (-0.1, 0.2), Verdict.INCONCLUSIVE),  # better AUROC, fit not better
        ((-0.003, -0.001), (0.1, 0.2), Verdict.REFUTED),  # worse
        ((-0.0009, 0.0009), (-0.1, 0.2), Verdict.REFUTED),  # equivalent within +-0.001
        ((-0.0009, 0.0011), (-0.1, 0.2), Verdict.INCONCLUSIVE),  # reaches past the margin
        ((-0.002, 0.004), (0.1, 0.2), Verdict.INCONCLUSIVE),
    ],
)
def test_decision_rule(auroc_ci, loglik_ci, verdict):
    assert _claim().decide(auroc_ci, loglik_ci, 0.001) is verdict


def test_claim_not_supported_on_an_exact_null(tmp_path):
    # Anomalies drawn exactly as normal text: both detectors sit at AUROC 0.5. At this toy
    # size the interval is wider than the equivalence margin (the production-size null rows
    # in docs/calibration.md test that branch), so REFUTED or INCONCLUSIVE.
    result = _evaluate(tmp_path, {"japanese": (0.0, 1.0), "spanish": (0.0, 1.0)}, "logistic")
    assert result.verdict is not Verdict.SUPPORTED, result.notes
    assert result.ci[0] <= 0 <= result.ci[1]
    assert abs(result.effect) < 0.01
    per_type = result.tables["per_type"]
    assert np.all(np.abs(per_type["auroc_gaussian"] - 0.5) < 0.05)


def test_claim_not_applicable_without_anomalies(tmp_path):
    data = synthetic.language_dataset(("in english", "in a kind tone"), n_subjects=1)
    acts = synthetic.anomaly_activations(data, {}, d_model=8)
    result = _claim().evaluate(synthetic.evidence(data, acts, tmp_path))
    assert result.verdict is Verdict.NOT_APPLICABLE


def test_a_warm_run_reuses_the_fits_and_gives_the_same_result(tmp_path, monkeypatch):
    """The folds' fits are cached with the activations: a second run (a new Evidence on the
    same cache) fits nothing and reports the same numbers; a new --lm-seed reuses them too
    and moves only the bootstrap."""
    cold = _evaluate(tmp_path, {"japanese": (0.0, 1.4)}, "t3")

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached fit was refitted")

    monkeypatch.setattr(anomaly, "fit_detector", forbidden)
    warm = _evaluate(tmp_path, {"japanese": (0.0, 1.4)}, "t3")
    assert_same_result(warm, cold)
    data = synthetic.language_dataset(ATTRIBUTES, n_subjects=6, per_pair=40)
    acts = synthetic.anomaly_activations(data, {"japanese": (0.0, 1.4)}, sampler="t3", d_model=64)
    reseeded = _claim().evaluate(synthetic.evidence(data, acts, tmp_path, seed=7))
    assert reseeded.effect == cold.effect  # the fits, so the point estimate, are shared
    assert reseeded.ci != cold.ci  # the bootstrap is not


def test_em_runs_each_column_to_its_own_tolerance():
    """A column whose components overlap needs far more iterations than a separated one;
    a stop on the summed gain would leave it short. Each column stops on its own gain, and
    a budget too small for the slow column is counted in ``capped``."""
    rng = np.random.default_rng(4)
    separated = _planted("gaussian", 800, columns=1, seed=4)[:, 0]
    overlapping = np.concatenate([rng.normal(0, 1, 600), rng.normal(0.8, 1.3, 200)])
    x = np.c_[separated, overlapping]
    fit = anomaly.fit_mixture(x, "gaussian", k=3, n_iter=5000, tol=1e-9)
    assert fit.capped == 0
    longer = anomaly.fit_mixture(x, "gaussian", k=3, n_iter=20000, tol=1e-12)
    assert longer.train_loglik - fit.train_loglik < 1e-3
    short = anomaly.fit_mixture(x, "gaussian", k=3, n_iter=20, tol=1e-9)
    assert short.capped >= 1 and short.n_iter == 20


def test_random_starts_reach_the_same_likelihood():
    x = _planted("logistic", 3000, columns=2, seed=8)
    fits = [
        anomaly.fit_mixture(x, "logistic", k=3, start=np.random.default_rng(s)) for s in range(3)
    ]
    lls = [f.train_loglik for f in fits]
    assert max(lls) - min(lls) < 0.01
    assert not np.allclose(fits[0].locs, fits[1].locs, rtol=0, atol=1e-12)


def test_split_projection_without_rest_keeps_only_the_spanned_directions():
    """rest=False: only the directions the rotation rows span (30 rows span 29), scaled on
    the scale rows, so no direction's scale comes from the rows that chose it."""
    rng = np.random.default_rng(9)
    spread = np.geomspace(4, 0.2, 60)
    a, b = (rng.normal(size=(n, 60)) * spread for n in (30, 400))
    projection = anomaly.split_projection(a, b, rest=False)
    assert projection.sd.size == 29
    centred = a - a.mean(axis=0)
    inside = projection.components @ np.linalg.pinv(centred) @ centred
    np.testing.assert_allclose(inside, projection.components, atol=1e-8)
    np.testing.assert_allclose(projection.transform(b).std(axis=0, ddof=1), 1.0)


def test_refit_redraw_averages_the_drawn_refits():
    redraw = _claim()._redraw
    per_refit = np.arange(3 * 2 * 4, dtype=float).reshape(3, 2, 4)  # (r, x, b)
    draws = np.array([[0, 0, 0], [2, 2, 2], [0, 1, 2], [1, 1, 0]])
    out = redraw(per_refit, draws)
    assert out.shape == (2, 4)
    for b, drawn in enumerate(draws):
        np.testing.assert_allclose(out[:, b], per_refit[drawn, :, b].mean(axis=0))
