"""Known answers for the representation-similarity statistics (harness/stats/similarity.py).

Planted truth: activations = g(layer) * (w_s * u[subject] + w_a(attribute) * v[attribute])
+ noise, with u, v orthogonal directions of squared norm d. For the raw variant the expected
D then has a closed form: cos(same subject) ~ w_s^2 / E, cos(same attribute) ~ w_a^2 / E with
E = w_s^2 + w_a^2 + sigma^2 / n_per_cell (the centroid's own noise), so
D ~ (w_s^2 - w_a^2) / E.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.stats import similarity as sm
from harness.synthetic import planted_cells as planted


def literal_d(c: np.ndarray) -> np.ndarray:
    """The definition written out: a double mean over (s2, a2) of a cosine difference."""

    def cos(p: np.ndarray, q: np.ndarray) -> float:
        return float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))

    S, A = c.shape[:2]
    out = np.empty((S, A))
    for s1 in range(S):
        for a1 in range(A):
            out[s1, a1] = np.mean(
                [
                    cos(c[s1, a1], c[s1, a2]) - cos(c[s1, a1], c[s2, a1])
                    for s2 in range(S)
                    if s2 != s1
                    for a2 in range(A)
                    if a2 != a1
                ]
            )
    return out


# --------------------------------------------------------------------- (c) hand-computed


def test_hand_computed_2x2_with_unequal_cells():
    # Centroids c00=(1,0), c01=(3,4), c10=(0,2), c11=(-3,4). With S = A = 2 there is one
    # (s2, a2) pair: D(s,a) = cos(c(s,a), c(s,1-a)) - cos(c(s,a), c(1-s,a)).
    #   D00 = 3/5 - 0 = 0.6      D01 = 3/5 - (-9+16)/25 = 0.32
    #   D10 = 8/10 - 0 = 0.8     D11 = 8/10 - 7/25 = 0.52
    # Cells hold 3, 1, 2, 2 sentences spread symmetrically about those centroids.
    rows = [
        (0, 0, (0.0, 0.0)),
        (0, 0, (2.0, 0.0)),
        (0, 0, (1.0, 0.0)),
        (0, 1, (3.0, 4.0)),
        (1, 0, (1.0, 2.0)),
        (1, 0, (-1.0, 2.0)),
        (1, 1, (-3.0, 3.0)),
        (1, 1, (-3.0, 5.0)),
    ]
    subject = np.array([r[0] for r in rows])
    attribute = np.array([r[1] for r in rows])
    x = np.array([r[2] for r in rows], dtype=np.float32)

    c = sm.centroids(x, subject, attribute, 2, 2)
    np.testing.assert_allclose(c, [[[1, 0], [3, 4]], [[0, 2], [-3, 4]]], atol=1e-12)
    result = sm.distinctiveness(x[None], subject, attribute, "raw")
    np.testing.assert_allclose(result.D[0], [[0.6, 0.32], [0.8, 0.52]], atol=1e-12)
    assert result.mean_abs[0] == pytest.approx((0.6 + 0.32 + 0.8 + 0.52) / 4, abs=1e-12)


def test_vectorized_equals_the_literal_double_mean_on_3x4():
    c = np.random.default_rng(3).standard_normal((2, 3, 4, 6))  # two layers
    fast = sm.distinctiveness_from_centroids(c)
    np.testing.assert_allclose(fast, np.stack([literal_d(c[0]), literal_d(c[1])]), atol=1e-12)


def test_pca_and_standardized_equal_the_textbook_transforms():
    resid, subject, attribute = planted(n_layers=2, d=16, noise=2.0, seed=4)
    for layer in range(2):
        x = resid[layer].astype(np.float64)
        z = x - x.mean(axis=0)
        _, sing, vt = np.linalg.svd(z, full_matrices=False)
        share = np.cumsum(sing**2) / np.sum(sing**2)
        k = int(np.argmax(share > 0.9)) + 1  # smallest k explaining more than 90 %
        textbook = {"pca": z @ vt[:k].T, "standardized": z / z.std(axis=0)}
        for variant, y in textbook.items():
            result = sm.distinctiveness(resid, subject, attribute, variant)
            expected = literal_d(sm.centroids(y, subject, attribute, 4, 5))
            # float32 input and Gram: agreement to ~1e-6, not to float64 rounding.
            np.testing.assert_allclose(result.D[layer], expected, atol=1e-5)
            assert result.components_kept[layer] == k


# --------------------------------------------------------------------- (a) sign of D


@pytest.mark.parametrize("variant", sm.VARIANTS)
@pytest.mark.parametrize(("w_s", "w_a", "sign"), [(2.0, 1.0, 1), (1.0, 2.0, -1)])
def test_dominant_factor_sets_the_sign_everywhere(variant, w_s, w_a, sign):
    resid, subject, attribute = planted(w_s=w_s, w_a=w_a, noise=0.5, seed=1)
    result = sm.distinctiveness(resid, subject, attribute, variant)
    assert (np.sign(result.D) == sign).all()
    assert not result.degenerate.any()


def test_raw_d_matches_the_closed_form():
    w_s, w_a, noise, per_cell = 2.0, 1.0, 1.0, 10
    resid, subject, attribute = planted(w_s=w_s, w_a=w_a, noise=noise, per_cell=per_cell, d=128)
    expected = (w_s**2 - w_a**2) / (w_s**2 + w_a**2 + noise**2 / per_cell)  # 0.588
    D = sm.distinctiveness(resid, subject, attribute, "raw").D
    # Over 30 seeds the grand mean was 0.5882 with sd 0.0043, so 0.015 is ~3.5 sd; single
    # cells wobble by ~0.01 from the noise cross-terms.
    assert D.mean() == pytest.approx(expected, abs=0.015)
    assert np.abs(D - expected).max() < 0.06


# --------------------------------------------------------------------- (b) depth trend


SHRINKING = np.linspace(1.0, 0.25, 9)


@pytest.mark.parametrize("variant", sm.VARIANTS)
def test_trend_detects_structure_shrinking_against_noise(variant):
    # Sample-centroid D (the seed's statistic) falls as the cell structure sinks into the
    # within-cell noise: mean |D| roughly halves from the first to the last third.
    resid, subject, attribute = planted(w_s=1.5, gain=SHRINKING, noise=2.0, seed=2)
    boot = sm.bootstrap_distinctiveness(resid, subject, attribute, variant, n_boot=200, seed=0)
    trend = boot.trend()
    assert trend.slope < 0 and trend.slope_ci[1] < 0
    assert trend.rho < 0
    assert trend.ratio < 1 and trend.ratio_ci[1] < 1
    assert trend.slope_pvalue < 0.025 and trend.ratio_pvalue < 0.025
    assert trend.early_layers == (0, 1, 2) and trend.late_layers == (6, 7, 8)


def test_growing_common_offset_shrinks_raw_d_only():
    # A direction shared by every sentence pulls all raw cosines towards 1, so raw D falls;
    # the centred variants remove it, so for them this is a null.
    offset = np.linspace(0.0, 3.0, 9)
    resid, subject, attribute = planted(w_s=1.5, offset=offset, noise=1.0, seed=5)
    raw = sm.bootstrap_distinctiveness(resid, subject, attribute, "raw", n_boot=200).trend()
    assert raw.ratio_ci[1] < 1 and raw.slope_ci[1] < 0
    for variant in ("pca", "standardized"):
        boot = sm.bootstrap_distinctiveness(resid, subject, attribute, variant, n_boot=200)
        trend = boot.trend()
        assert trend.ratio_ci[0] <= 1 <= trend.ratio_ci[1]


def test_basic_interval_does_not_double_the_noise_bias():
    # Cosines are scale-free, so scaling the structure down (gain) leaves the population D
    # unchanged; only the sample centroids' noise shrinks |D|. With 100 sentences a cell that
    # bias is small (ratio ~0.89), but every resample adds it again: on 100 seeds the
    # percentile interval said "ratio < 1" in 98 %, the basic one in 8 % (second-order bias).
    percentile_fires = basic_fires = 0
    for seed in range(5):
        resid, subject, attribute = planted(
            w_s=1.5, gain=SHRINKING, noise=2.0, per_cell=100, seed=200 + seed
        )
        boot = sm.bootstrap_distinctiveness(resid, subject, attribute, "raw", n_boot=200)
        reps = boot.mean_abs_replicates
        for interval in sm.INTERVALS:
            trend = sm.depth_trend(boot.estimate.mean_abs, reps, interval=interval)
            fired = trend.ratio_ci[1] < 1
            percentile_fires += fired and interval == "percentile"
            basic_fires += fired and interval == "basic"
    assert percentile_fires >= 4
    assert basic_fires <= 1


def test_constant_structure_does_not_fire():
    # A null: the same structure and noise at every layer. Each 95 % interval should miss 1
    # in ~5 % of seeds, so over 8 seeds at most one miss per statistic is allowed.
    ratio_misses = slope_misses = 0
    for seed in range(8):
        resid, subject, attribute = planted(w_s=1.5, noise=1.0, seed=100 + seed)
        boot = sm.bootstrap_distinctiveness(resid, subject, attribute, "raw", n_boot=200, seed=seed)
        trend = boot.trend()
        ratio_misses += not trend.ratio_ci[0] <= 1 <= trend.ratio_ci[1]
        slope_misses += not trend.slope_ci[0] <= 0 <= trend.slope_ci[1]
    assert ratio_misses <= 1
    assert slope_misses <= 1


# --------------------------------------------------------------------- (d) degeneracy


def massive_dimension(resid: np.ndarray, scale: float = 1000.0, seed: int = 9) -> np.ndarray:
    """Dimension 0 replaced by noise 1000x the scale of the rest (a massive activation)."""
    out = resid.copy()
    out[:, :, 0] = scale * np.random.default_rng(seed).standard_normal(out.shape[:2])
    return out


def test_massive_dimension_makes_pca_degenerate_and_is_flagged():
    resid, subject, attribute = planted(w_s=2.0, w_a=1.0, noise=0.5, n_layers=4, seed=6)
    resid = massive_dimension(resid)
    pca = sm.distinctiveness(resid, subject, attribute, "pca")
    assert (pca.components_kept == 1).all()
    assert pca.degenerate.all()
    assert all("kept 1" in reason for reason in pca.degenerate_reasons())
    assert (pca.top_pc_share > 0.99).all() and (pca.top_dim_share > 0.99).all()
    # The diagnostics travel with every variant, so a raw-variant verdict sees them too.
    raw = sm.distinctiveness(resid, subject, attribute, "raw")
    assert (raw.top_dim_share > 0.99).all() and (raw.components_kept == 1).all()


def test_standardized_variant_recovers_the_structure_under_a_massive_dimension():
    resid, subject, attribute = planted(w_s=2.0, w_a=1.0, noise=0.5, n_layers=4, seed=6)
    std = sm.distinctiveness(massive_dimension(resid), subject, attribute, "standardized")
    assert not std.degenerate.any()
    assert (std.D > 0).all()


def test_a_degenerate_run_cannot_feed_a_trend_silently():
    resid, subject, attribute = planted(n_layers=4, seed=6)
    boot = sm.bootstrap_distinctiveness(
        massive_dimension(resid), subject, attribute, "pca", n_boot=20
    )
    with pytest.raises(ValueError, match="usable layers"):
        boot.trend()  # every layer is degenerate, so none is used by default


@pytest.mark.parametrize("variant", sm.VARIANTS)
def test_identical_sentences_give_a_constant_d_that_is_flagged(variant):
    resid, subject, attribute = planted(n_layers=2, seed=7)
    resid[:] = resid[:, :1]  # every sentence equal: D == 0 everywhere (no variance at all)
    boot = sm.bootstrap_distinctiveness(resid, subject, attribute, variant, n_boot=10)
    assert boot.estimate.degenerate.all()
    assert all("constant" in reason for reason in boot.estimate.degenerate_reasons())
    assert np.abs(boot.replicates).max() < 1e-6  # float32 resampled means: rounding only


# --------------------------------------------------------------------- (e) ranking


def test_planted_strong_attribute_ranks_first():
    strength = np.array([1.0, 1.0, 2.5, 1.0, 1.0])
    resid, subject, attribute = planted(attribute_strength=strength, noise=1.0, seed=8)
    boot = sm.bootstrap_distinctiveness(resid, subject, attribute, "raw", n_boot=100)
    names = [f"attr{i}" for i in range(5)]
    table = sm.ranking(boot.estimate.D, boot.replicates, names=names, top_k=1)
    top = table.iloc[0]
    assert top["attribute"] == 2 and top["name"] == "attr2" and top["rank"] == 1
    assert top["top_k_share"] > 0.95
    assert top["mean_D"] < 0  # a strong attribute pulls its cells together: D < 0
    assert table["top_k_share"].sum() == pytest.approx(1.0)


def test_ranking_by_subject_and_layer_selection():
    resid, subject, attribute = planted(w_s=2.0, seed=8)
    D = sm.distinctiveness(resid, subject, attribute).D
    by_subject = sm.ranking(D, by="subject", use=np.arange(9) < 3)
    assert list(by_subject["rank"]) == [1, 2, 3, 4]
    expected = np.abs(D[:3]).mean(axis=(0, 2))
    np.testing.assert_allclose(np.sort(by_subject["mean_abs_D"])[::-1], np.sort(expected)[::-1])


# --------------------------------------------------------------------- bootstrap mechanics


def test_resample_weights_draw_each_cell_size_exactly():
    subject = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    attribute = np.array([0, 0, 1, 0, 1, 1, 1, 0])
    cells = sm._cells(subject, attribute, None, None, len(subject))
    weights = sm._resample_weights(cells, n_boot=50, seed=0)  # (K, B, m_max)
    np.testing.assert_allclose(weights.sum(axis=2), 1.0, atol=1e-6)  # resampled means
    draws = weights * cells.counts[:, None, None]  # how often each member was drawn
    np.testing.assert_allclose(draws, np.rint(draws), atol=1e-5)
    assert (weights.transpose(0, 2, 1)[cells.pad == -1] == 0).all()  # padding never drawn
    assert (cells.counts == [2, 2, 2, 2]).all() and cells.pad.shape == (4, 2)


def test_bootstrap_is_reproducible_uses_one_draw_for_all_layers_and_reads_memmaps(tmp_path):
    resid, subject, attribute = planted(n_layers=3, seed=10)
    resid[2] = resid[0]  # identical layers must get identical replicates
    path = tmp_path / "resid.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=resid.shape)
    mm[:] = resid
    mm.flush()
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=resid.shape)

    a = sm.bootstrap_distinctiveness(resid, subject, attribute, "pca", n_boot=40, seed=3)
    b = sm.bootstrap_distinctiveness(mm, subject, attribute, "pca", n_boot=40, seed=3)
    c = sm.bootstrap_distinctiveness(resid, subject, attribute, "pca", n_boot=40, seed=4)
    np.testing.assert_array_equal(a.replicates, b.replicates)
    assert not np.array_equal(a.replicates, c.replicates)
    np.testing.assert_array_equal(a.replicates[:, 0], a.replicates[:, 2])
    point = sm.distinctiveness(resid, subject, attribute, "pca")
    np.testing.assert_allclose(a.estimate.D, point.D, atol=1e-12)
    assert a.replicates.shape == (40, 3, 4, 5)
    assert (a.mean_abs_ci[:, 0] <= a.mean_abs_ci[:, 1]).all()
    assert (a.cell_ci[..., 0] <= a.cell_ci[..., 1]).all()


def test_tables_have_one_row_per_layer_cell_and_statistic():
    resid, subject, attribute = planted(n_layers=4, seed=11)
    boot = sm.bootstrap_distinctiveness(resid, subject, attribute, "standardized", n_boot=30)
    layers = boot.table()
    assert len(layers) == 4
    assert {"mean_abs_D", "ci_low", "ci_high", "degenerate", "components_kept"} <= set(layers)
    assert len(boot.cells()) == 4 * 4 * 5
    assert list(boot.trend().table()["statistic"]) == ["slope", "spearman_rho", "late_early_ratio"]
    with pytest.raises(ValueError):
        boot.estimate.D[0, 0, 0] = 1.0  # results are read-only


def test_invalid_inputs_are_refused():
    resid, subject, attribute = planted(n_layers=1, seed=12)
    with pytest.raises(ValueError, match="variant"):
        sm.distinctiveness(resid, subject, attribute, "ica")
    with pytest.raises(ValueError, match="empty"):
        keep = ~((subject == 1) & (attribute == 2))
        sm.distinctiveness(resid[:, keep], subject[keep], attribute[keep])
    with pytest.raises(ValueError, match="out of range"):
        sm.distinctiveness(resid, subject, attribute, n_subjects=3)
    with pytest.raises(ValueError, match="n_layers"):
        sm.distinctiveness(resid[0], subject, attribute)


def test_noise_free_norms_keep_mean_abs_d_from_tracking_the_cell_size():
    # Version 1's D shrank towards 0 in small cells (the centroids' noise lengthens them);
    # with noise-free norms the estimate moves far less between 4 and 22 sentences per cell.
    rng = np.random.default_rng(0)
    n_s, n_a, d = 8, 10, 64
    u, v = (
        rng.normal(size=(n_s, d)),
        rng.normal(size=(n_a, d)) * rng.lognormal(0, 0.8, n_a)[:, None],
    )
    means = {}
    for noise_free in (False, True):
        for n in (4, 22):
            s = np.repeat(np.arange(n_s), n_a * n)
            a = np.tile(np.repeat(np.arange(n_a), n), n_s)
            x = 0.4 * (u[s] + v[a]) + 1.5 * rng.normal(size=(len(s), d))
            result = sm.distinctiveness(
                x[None].astype(np.float32), s, a, "raw", noise_free=noise_free
            )
            means[noise_free, n] = result.mean_abs[0]
    assert means[False, 22] / means[False, 4] > 1.6
    assert 0.7 < means[True, 22] / means[True, 4] < 1.4
