"""The japanese-sharper-modes statistic on planted truths: it fires when Japanese pairs carry
distinct side modes, not when every attribute is alike, the other way round when only the
other attributes carry them, not for a pure difference of scale, and it reports its
confounds; its randomization test keeps its level on skewed scores. Samples: 8 subjects x
4 attributes x 5 sentences x 96 coordinates x 5 layers."""

import numpy as np
import pandas as pd
import pytest

from harness import synthetic
from harness.claim import Verdict
from tests.conftest import claim_module

claim = claim_module("japanese_sharper_modes")

JA = "in japanese"
OTHERS = ("in english", "in spanish", "in all lower case")
DATA = synthetic.language_dataset((*OTHERS, JA), n_subjects=8, per_pair=5)
EVERY = {a: 0.02 for a in (*OTHERS, JA)}


def with_control(data, acts, tmp_path, matched=None):
    """Evidence whose token-matched selection ('last') holds ``matched`` (default: the same
    activations, a truth no token choice explains)."""

    def reselect(tokens):
        assert tokens == claim.MATCHED_TOKENS
        control = acts if matched is None else matched
        return synthetic.evidence(data, control, tmp_path / "last", tokens=tokens)

    return synthetic.evidence(data, acts, tmp_path, reselect=reselect)


def run(tmp_path, data=DATA, **planted):
    acts = synthetic.side_mode_activations(data, **planted)
    return claim.evaluate(with_control(data, acts, tmp_path))


def scaled(acts, rows, factor):
    """The same activations with the given sentences' whole vectors (modes too) scaled."""
    resid = np.array(acts.resid)
    resid[:, rows] *= factor
    return synthetic.ActivationSet(resid, acts.n_tokens, {**acts.meta, "scaled": factor})


def test_planted_japanese_side_modes_are_supported(tmp_path):
    # 2 of 96 coordinates of every Japanese sentence at +-20: one left and one right mode.
    result = run(tmp_path, side_fraction={JA: 0.02}, seed=1)
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    assert result.effect > 0 and result.ci[0] > 0
    assert result.n == 8
    layer = result.tables["per_layer"]
    assert list(layer.columns) == [
        "layer",
        "mean_J",
        "share_subjects_J_positive",
        "mean_relative_J",
    ]
    assert (layer["share_subjects_J_positive"] == 1.0).all()
    assert (layer["mean_relative_J"] == 1.0).all()  # the others have no modes at all
    top = result.tables["per_attribute"].iloc[0]
    assert top["attribute"] == JA and top["n_distinct"] == pytest.approx(2.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_attributes_are_not_supported(tmp_path, seed):
    # Every attribute carries the same side modes, so scores vary, but Japanese is no
    # different: the exchangeable null (bench/calibrate_japanese.py measures its rate).
    result = run(tmp_path, side_fraction=EVERY, jitter=3.0, seed=seed)
    assert result.verdict != Verdict.SUPPORTED, result.summary()


def test_no_side_modes_anywhere_is_inconclusive(tmp_path):
    result = run(tmp_path, seed=3)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.effect == 0.0 and result.pvalue == 1.0


def test_side_modes_only_in_other_attributes_are_refuted(tmp_path):
    result = run(tmp_path, side_fraction=dict.fromkeys(OTHERS, 0.02), seed=4)
    assert result.verdict == Verdict.REFUTED, result.summary()
    assert result.effect < 0 and result.ci[1] < 0
    # The p against the claim (J > 0) is large beside a refutation (v1 gave p(J < 0)).
    assert result.pvalue > 0.5


def test_dataset_without_japanese_is_not_applicable(tmp_path):
    data = synthetic.language_dataset(OTHERS, n_subjects=4, per_pair=4)
    result = run(tmp_path, data, side_fraction={"in english": 0.02}, n_layers=2, d_model=64)
    assert result.verdict == Verdict.NOT_APPLICABLE
    assert "no 'in japanese' attribute" in result.notes[0]


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_pure_scale_difference_is_not_supported(tmp_path, factor):
    # Japanese vectors are the others' scaled as a whole, side modes included. At one
    # bandwidth in data units the wider samples' modes stand out more against their lower
    # primary; the standardized score is blind to scale.
    acts = synthetic.side_mode_activations(DATA, EVERY, jitter=1.0, seed=5)
    rows = np.flatnonzero(DATA.frame["attribute"].to_numpy() == JA)
    result = claim.evaluate(synthetic.evidence(DATA, scaled(acts, rows, factor), tmp_path))
    assert result.verdict != Verdict.SUPPORTED, result.summary()


def test_wider_bulk_without_modes_is_not_supported(tmp_path):
    result = run(tmp_path, scale={JA: 2.0}, sampler="t3", seed=6)
    assert result.verdict != Verdict.SUPPORTED, result.summary()


def test_standardized_score_is_scale_free_and_data_units_are_not():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.logistic(0, 1, 470), 20 + rng.normal(0, 1, 10)])
    y = np.concatenate([rng.logistic(0, 1, 470), 20 + rng.normal(0, 1, 10)])
    same = claim.distinctness([x, y])
    wide = claim.distinctness([2 * x, y])
    assert wide[0].score == pytest.approx(same[0].score, rel=1e-9)
    data_same = claim.distinctness([x, y], units="data")
    data_wide = claim.distinctness([2 * x, y], units="data")
    assert data_wide[0].score > 1.5 * data_same[0].score


def test_floor_ignores_stray_values_and_keeps_real_clusters():
    rng = np.random.default_rng(8)
    bulk = rng.logistic(0, 1, 480)
    # Two stray far values make bumps the peak finder keeps, but fewer than 3 values' worth.
    strays = np.concatenate([bulk[:-2], [15.0, -18.0]])
    cluster = np.concatenate([bulk[:-10], 15 + rng.normal(0, 0.3, 10)])
    found = claim.distinctness([strays, cluster, bulk])
    assert found[0].n_secondary >= 1 and found[0].n_distinct == 0 and found[0].score == 0.0
    assert found[1].n_distinct == 1 and found[1].score > 0.01


def test_grid_padding_keeps_a_mode_at_the_end_of_the_range():
    # The side cluster holds the largest values of all samples: on a bare min..max grid
    # the density still rises at the grid's end, so find_peaks reports no peak there.
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.logistic(0, 1, 470), 20 + rng.normal(0, 0.3, 10)])
    others = [rng.logistic(0, 1, 480) for _ in range(3)]
    padded = claim.distinctness([x, *others])[0]
    bare = claim.distinctness([x, *others], pad_bandwidths=0.0)[0]
    assert padded.n_distinct == 1 and padded.score > 10 * bare.score


def test_too_few_subjects_is_inconclusive(tmp_path):
    data = synthetic.language_dataset((*OTHERS, JA), n_subjects=3, per_pair=4)
    result = run(tmp_path, data, side_fraction={JA: 0.02}, n_layers=2, d_model=64)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "only 3 subjects" in result.notes[0]


def test_four_subjects_cannot_reach_significance_and_says_so(tmp_path):
    data = synthetic.language_dataset((OTHERS[0], JA), n_subjects=4, per_pair=4)
    result = run(tmp_path, data, side_fraction={JA: 0.02}, n_layers=2, d_model=64)
    # The intersection-union p is the largest of its legs: at least the smallest p, 1/16.
    assert result.verdict == Verdict.INCONCLUSIVE and result.pvalue >= 1 / 16
    assert any("cannot reach" in note for note in result.notes)


def test_early_versus_late_is_reported(tmp_path):
    # Japanese side modes in the first two of six layers only: J > 0 early, 0 late.
    planted = {JA: (0.02, 0.02, 0.0, 0.0, 0.0, 0.0)}
    result = run(tmp_path, side_fraction=planted, n_layers=6, seed=10)
    assert result.verdict == Verdict.SUPPORTED
    early_late = result.tables["early_late"].set_index("part")
    assert early_late.loc["first minus last", "ci_lo"] > 0
    assert early_late.loc["last third", "mean_relative_J"] == 0.0
    sub = result.tables["sub_verdicts"].set_index("part")["verdict"]
    assert sub["clearer in earlier layers"] == "SUPPORTED"


def test_clearer_early_needs_both_selections(tmp_path):
    early = {JA: (0.02, 0.02, 0.0, 0.0, 0.0, 0.0)}
    acts = synthetic.side_mode_activations(DATA, early, n_layers=6, seed=10)
    flat = synthetic.side_mode_activations(DATA, {JA: 0.02}, n_layers=6, seed=12)
    result = claim.evaluate(with_control(DATA, acts, tmp_path, matched=flat))
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    sub = result.tables["sub_verdicts"].set_index("part")["verdict"]
    assert sub["clearer in earlier layers"] == "INCONCLUSIVE"


def test_effect_under_seed_only_is_the_token_confound(tmp_path):
    acts = synthetic.side_mode_activations(
        DATA, {JA: 0.02}, tokens={JA: 24} | dict.fromkeys(OTHERS, 12), seed=11
    )
    matched = synthetic.side_mode_activations(DATA, EVERY, seed=13)
    result = claim.evaluate(with_control(DATA, acts, tmp_path, matched=matched))
    assert result.verdict == Verdict.INCONCLUSIVE, result.summary()
    notes = " | ".join(result.notes)
    assert result.notes[0].startswith("confound: token selection")
    assert "100% of Japanese sentences have no space" in notes
    assert "Japanese sentences average 24.0 tokens, the others 12.0" in notes
    selections = result.tables["selections"]
    assert list(selections["test"])[:2] == ["tokens 'seed'", "tokens 'last'"]
    assert set(result.tables["pairs"].columns) >= {"subject", "attribute", "mean_tokens", "score"}


def test_effect_beside_longer_sentences_only_is_the_length_confound(tmp_path):
    # Japanese 3x longer than every other sentence: no slope across the others reaches it.
    acts = synthetic.side_mode_activations(
        DATA, {JA: 0.02}, tokens={JA: 36} | dict.fromkeys(OTHERS, 12), seed=11
    )
    result = claim.evaluate(with_control(DATA, acts, tmp_path))
    assert result.verdict == Verdict.INCONCLUSIVE, result.summary()
    assert result.notes[0].startswith("confound: sentence length")
    assert "0% of Japanese pairs" in result.notes[0]


def test_without_a_model_the_control_is_missing_and_nothing_is_supported(tmp_path):
    acts = synthetic.side_mode_activations(DATA, {JA: 0.02}, seed=11)
    result = claim.evaluate(synthetic.evidence(DATA, acts, tmp_path))
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.notes[0].startswith("token-matched control not run")


def _score_table(matrix: np.ndarray) -> pd.DataFrame:
    """A scores table (one layer) from a subjects x attributes matrix, Japanese first."""
    rows = [
        {"subject": s, "attribute": a, "japanese": a == 0, "layer": 0, "score": value}
        for s, line in enumerate(matrix)
        for a, value in enumerate(line)
    ]
    return pd.DataFrame(rows)


def _both(test):
    return test.p_greater, test.p_less


def test_relabel_test_is_calibrated_on_skewed_scores():
    # Scores drawn iid (so Japanese is exchangeable) from a heavily skewed law: J is skewed
    # too, and a test assuming J symmetric about 0 is off (see relabel_test's docstring);
    # the relabeling test keeps its level on both sides. 2000 nulls: binomial sd ~0.5%.
    rng = np.random.default_rng(12)
    p = np.array(
        [_both(claim.relabel_pvalues(rng.exponential(size=(8, 4)) ** 2)) for _ in range(2000)]
    )
    assert np.all((p < 0.05).mean(axis=0) < 0.065), (p < 0.05).mean(axis=0)


def test_relabel_test_exact_and_monte_carlo_agree():
    rng = np.random.default_rng(13)
    scores = _score_table(rng.exponential(size=(6, 5)) + np.array([0.8, 0, 0, 0, 0]))
    exact = claim.relabel_test(scores)
    sampled = claim.relabel_test(scores, max_exact=100, draws=20_000, seed=1)
    assert exact.exact and not sampled.exact
    assert exact.smallest_p == pytest.approx(5.0**-6)
    assert sampled.p_greater == pytest.approx(exact.p_greater, abs=0.01)
    assert exact.p_greater + exact.p_less >= 1.0  # the observed labelling counts in both


def test_covariate_adjusted_test_removes_a_pure_length_effect_and_keeps_a_language_one():
    rng = np.random.default_rng(0)
    pure, language = [], []
    for _ in range(10):
        x = np.concatenate([[0.3], rng.normal(0.0, 0.2, 11)])  # Japanese 1.35x longer
        noise = rng.normal(0.0, 0.01, 12)
        pure.append((0.2 * x + noise, x))
        language.append((0.2 * x + noise + np.r_[0.05, np.zeros(11)], x))
    p_pure = [claim.covariate_adjusted_test(pure, seed=s)[0].p_greater for s in range(3)]
    test, slope, shift = claim.covariate_adjusted_test(language)
    assert min(p_pure) > 0.05
    assert test.p_greater < 0.01 and slope == pytest.approx(0.2, abs=0.03) and shift > 0


def test_covariate_adjusted_test_without_length_differences_is_the_plain_relabel_test():
    rng = np.random.default_rng(1)
    subjects = [(rng.exponential(1.0, 4), np.zeros(4)) for _ in range(5)]
    test, slope, _ = claim.covariate_adjusted_test(subjects)
    plain = claim.relabel_pvalues([y for y, _ in subjects])
    assert slope == 0.0 and test.exact and plain.exact
    assert test.p_greater == pytest.approx(plain.p_greater)
    assert test.p_less == pytest.approx(plain.p_less)
