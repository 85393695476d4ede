"""Token selection ``all``: per-pair streaming reservoir sampling of token vectors."""

import json
from pathlib import Path

import numpy as np
import pytest

# In-process pytester runs drop modules first imported inside them, and torch's C
# extension cannot be imported twice: load the heavy stack first (as test_plugin does).
import torch
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401
from scipy import stats

from harness import activations, evidence, extraction, reservoir
from harness.cache import Cache
from harness.config import ConfigError, ExtractionSettings, FitSettings, RunConfig
from harness.dataset import Dataset
from harness.progress import silent
from tests.conftest import ROOT, claim_module, make_project

# ------------------------------------------------------------------------ the planner


def _inclusion(scheme, n: int, k: int, seeds: range) -> np.ndarray:
    """How often each of ``n`` candidates of one pair (capacity ``k``) ends up kept."""
    counts = np.zeros(n, dtype=np.int64)
    for seed in seeds:
        counts[scheme(n, k, seed)] += 1
    return counts


def _algorithm_r(n: int, k: int, seed: int, batch: int = 7) -> np.ndarray:
    plan = reservoir.Reservoir([k], seed=seed)
    held = np.full(k, -1)
    for start in range(0, n, batch):
        chosen, rows = plan.assign(np.zeros(min(batch, n - start), dtype=np.int64))
        held[rows] = start + chosen
    return held


def _first_k(n: int, k: int, seed: int) -> np.ndarray:
    return np.arange(k)  # a biased scheme: the start of the stream only


def _late_biased(n: int, k: int, seed: int) -> np.ndarray:
    # Another biased scheme: every later candidate replaces a random slot with a fixed
    # probability, so late candidates are kept far more often than early ones.
    rng = np.random.default_rng(seed)
    held = np.arange(k)
    for i in range(k, n):
        if rng.random() < 0.5:
            held[rng.integers(k)] = i
    return held


def _uniform(counts: np.ndarray, k: int, runs: int) -> bool:
    """Chi-square test of equal inclusion k/n per candidate (the counts sum to k * runs).
    Each count is binomial(runs, k/n); dividing by (1 - k/n) makes the statistic
    chi-square with n - 1 degrees of freedom under uniform inclusion."""
    n = len(counts)
    p = k / n
    expected = runs * p
    statistic = float(((counts - expected) ** 2).sum() / (expected * (1 - p)))
    return bool(stats.chi2.sf(statistic, n - 1) > 1e-3)


SEEDS = range(2000)


def test_reservoir_keeps_each_candidate_with_probability_k_over_n():
    n, k = 24, 5
    counts = _inclusion(_algorithm_r, n, k, SEEDS)
    assert counts.sum() == k * len(SEEDS)
    assert _uniform(counts, k, len(SEEDS))
    # Per candidate, too: within 4.5 binomial standard deviations of runs * k / n.
    p = k / n
    sd = np.sqrt(len(SEEDS) * p * (1 - p))
    assert np.abs(counts - len(SEEDS) * p).max() < 4.5 * sd


@pytest.mark.parametrize("scheme", [_first_k, _late_biased])
def test_the_uniformity_check_rejects_biased_schemes(scheme):
    n, k = 24, 5
    counts = _inclusion(scheme, n, k, SEEDS)
    assert counts.sum() == k * len(SEEDS)
    assert not _uniform(counts, k, len(SEEDS))


def _one_at_a_time(pairs: np.ndarray, capacities, seed: int) -> np.ndarray:
    """Reference: the planner fed one candidate per call; final candidate in each row."""
    plan = reservoir.Reservoir(capacities, seed=seed)
    held = np.full(plan.total, -1)
    for i, pair in enumerate(pairs):
        chosen, rows = plan.assign(np.array([pair]))
        held[rows] = i + chosen
    return held


def test_batches_give_what_one_at_a_time_gives_and_keep_the_last_per_row():
    rng = np.random.default_rng(5)
    pairs = rng.integers(0, 3, size=400)
    capacities = reservoir.capacities(np.bincount(pairs, minlength=3), 6)
    expected = _one_at_a_time(pairs, capacities, seed=11)
    assert (expected >= 0).all()
    for cuts in ([400], [1] * 400, [13, 250, 37, 100], [64] * 6 + [16]):
        plan = reservoir.Reservoir(capacities, seed=11)
        held = np.full(plan.total, -1)
        start = 0
        for size in cuts:
            chosen, rows = plan.assign(pairs[start : start + size])
            assert len(np.unique(rows)) == len(rows)  # one candidate per row per batch
            assert (np.diff(chosen) > 0).all()
            held[rows] = start + chosen
            start += size
        np.testing.assert_array_equal(held, expected)
        # Each row belongs to the right pair.
        for pair in range(3):
            block = held[plan.offsets[pair] : plan.offsets[pair] + capacities[pair]]
            assert (pairs[block] == pair).all()


def test_a_batch_where_two_candidates_hit_one_slot_returns_only_the_later():
    # Capacity 1: after the first candidate every later one that is kept overwrites row 0.
    plan = reservoir.Reservoir([1], seed=0)
    chosen, rows = plan.assign(np.zeros(200, dtype=np.int64))
    assert rows.tolist() == [0]
    reference = _one_at_a_time(np.zeros(200, dtype=np.int64), [1], seed=0)
    assert chosen.tolist() == reference.tolist() and chosen[0] > 0


def test_capacity_is_the_pair_size_when_a_pair_has_fewer_tokens():
    capacities = reservoir.capacities([3, 100, 10], 10)
    assert capacities.tolist() == [3, 10, 10]
    plan = reservoir.Reservoir(capacities, seed=0)
    assert plan.total == 23 and plan.offsets.tolist() == [0, 3, 13]
    pairs = np.repeat([0, 1, 2], [3, 100, 10])
    chosen, rows = plan.assign(pairs)
    # The small pair and the exactly-full pair keep every candidate, in order.
    small = rows < 3
    assert chosen[small].tolist() == [0, 1, 2] and rows[small].tolist() == [0, 1, 2]
    exact = rows >= 13
    assert chosen[exact].tolist() == list(range(103, 113))
    assert sorted(rows.tolist()) == list(range(23))
    with pytest.raises(ValueError, match="reservoir must be >= 1"):
        reservoir.capacities([3], 0)


def test_planner_is_deterministic_and_its_state_does_not_grow_with_the_stream():
    pairs = np.random.default_rng(0).integers(0, 4, size=5000)
    caps = reservoir.capacities(np.bincount(pairs), 8)
    first = _one_at_a_time(pairs[:300], reservoir.capacities(np.bincount(pairs[:300]), 8), 3)
    again = _one_at_a_time(pairs[:300], reservoir.capacities(np.bincount(pairs[:300]), 8), 3)
    other = _one_at_a_time(pairs[:300], reservoir.capacities(np.bincount(pairs[:300]), 8), 4)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    plan = reservoir.Reservoir(caps, seed=0)
    for start in range(0, len(pairs), 100):
        plan.assign(pairs[start : start + 100])
    state = [v for v in vars(plan).values() if isinstance(v, np.ndarray)]
    assert max(v.size for v in state) == 4  # per pair, not per candidate
    assert plan.seen.sum() == len(pairs)


# -------------------------------------------------------------------------- settings


def test_reservoir_setting_and_cache_key():
    with pytest.raises(ConfigError, match="token reservoir must be >= 1"):
        ExtractionSettings("all", reservoir=0)
    # Other modes keep their keys byte-identical; "all" is keyed by the sample size.
    assert ExtractionSettings("seed", reservoir=7).key_fields() == {
        "tokens": "seed",
        "processing": "tl-compat",
    }
    assert ExtractionSettings("all", reservoir=7).key_fields() == {
        "tokens": "all",
        "processing": "tl-compat",
        "reservoir": 7,
    }
    assert ExtractionSettings("all").reservoir == 64


def test_plan_all_reads_every_token_after_bos(tiny_models):
    tokenizer = tiny_models["tiny-gpt2"].tokenizer
    plan = extraction.plan_tokens(tokenizer, "One two three four", "all")
    assert plan.positions == tuple(range(1, len(plan.ids)))


def test_reservoir_zero_is_a_usage_error(pytester, shared_cache):
    make_project(pytester.path, shared_cache)
    result = pytester.runpytest(
        "claims", "--lm-tokens=all", "--lm-token-reservoir=0", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*token reservoir must be >= 1, got 0*"])


# ------------------------------------------------------------------------ extraction


def _sentences(per_pair: int, pairs: int = 3) -> Dataset:
    rows = [json.loads(line) for line in (ROOT / "harness/data/sentences.jsonl").open()]
    by_pair: dict = {}
    for row in rows:
        by_pair.setdefault((row["subject"], row["attribute"]), []).append(row)
    chosen = [r for group in list(by_pair.values())[:pairs] for r in group[:per_pair]]
    import pandas as pd

    return Dataset(pd.DataFrame(chosen)[["id", "subject", "attribute", "text"]], "test")


def _extract_all(lm, data: Dataset, reservoir_size: int, batch_size: int = 4, bridge=None):
    settings = ExtractionSettings("all", batch_size=batch_size, reservoir=reservoir_size)
    frame = data.frame
    return extraction.extract(
        lm,
        list(frame["text"]),
        settings,
        progress=silent,
        bridge=bridge,
        pairs=list(zip(frame["subject"], frame["attribute"], strict=True)),
    )


def test_memory_is_bounded_by_pairs_times_reservoir(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    small, large = _sentences(2), _sentences(8)
    one = _extract_all(lm, small, 12)
    four = _extract_all(lm, large, 12)
    # 2 sentences per pair already have more than 12 tokens after BOS: same shape at 4x.
    assert one.resid.shape == four.resid.shape == (2, 3 * 12, 64)
    assert four.meta["n_source_sentences"] == 24 and four.meta["reservoir"] == 12
    # Rows come from every sentence range of a pair, not only the first ones read.
    assert len(np.unique(four.source_rows)) > 8
    # Each pair's block holds only its own sentences' tokens.
    labels = list(zip(large.frame["subject"], large.frame["attribute"], strict=True))
    for pair in range(3):
        block = four.source_rows[pair * 12 : (pair + 1) * 12]
        assert len({labels[i] for i in block}) == 1
    n_tokens = np.array(
        [len(extraction.plan_tokens(lm.tokenizer, t, "all").ids) for t in large.frame["text"]]
    )
    np.testing.assert_array_equal(four.n_tokens, n_tokens[four.source_rows])
    assert (four.positions >= 1).all() and (four.positions < four.n_tokens).all()


def test_kept_rows_are_the_models_residual_at_that_token(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    data = _sentences(3, pairs=2)
    bridge = extraction.boot(lm, ExtractionSettings("all"))
    single = _extract_all(lm, data, 5, batch_size=1, bridge=bridge)
    batched = _extract_all(lm, data, 5, batch_size=4, bridge=bridge)
    # The choice depends on the (length-sorted) candidate order only, not the batch size.
    np.testing.assert_array_equal(single.source_rows, batched.source_rows)
    np.testing.assert_array_equal(single.positions, batched.positions)
    np.testing.assert_allclose(single.resid, batched.resid, atol=1e-4, rtol=0)
    texts = list(data.frame["text"])
    names = [extraction.HOOK_TEMPLATE.format(layer=layer) for layer in range(2)]
    checked = 0
    for row in range(single.resid.shape[1]):
        plan = extraction.plan_tokens(lm.tokenizer, texts[single.source_rows[row]], "all")
        with torch.inference_mode():
            _, cache = bridge.run_with_cache(torch.tensor([plan.ids]), names_filter=names)
        for layer, name in enumerate(names):
            direct = cache[name][0, single.positions[row]].float().numpy()
            # Alone in its batch, the sentence ran exactly as here: equal, not just close.
            np.testing.assert_array_equal(single.resid[layer, row], direct)
            checked += 1
    assert checked == 2 * single.resid.shape[1]
    # A token at the last position equals what "last" reads from the same sentence.
    last = extraction.extract(
        lm, texts, ExtractionSettings("last", batch_size=1), progress=silent, bridge=bridge
    )
    ends = np.flatnonzero(single.positions == single.n_tokens - 1)
    for row in ends:
        np.testing.assert_array_equal(single.resid[:, row], last.resid[:, single.source_rows[row]])


# -------------------------------------------------------------- format, cache, claims


def test_token_rows_round_trip_through_a_set_and_the_cache(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    data = _sentences(2, pairs=2)
    acts = _extract_all(lm, data, 6)
    stored = activations.read(activations.write(tmp_path / "set", acts, data))
    frame = stored.dataset.frame
    assert len(frame) == acts.resid.shape[1] == 12
    source = data.frame.iloc[acts.source_rows].reset_index(drop=True)
    assert frame["token_position"].tolist() == acts.positions.tolist()
    assert frame["text"].tolist() == source["text"].tolist()
    assert frame["id"].tolist() == [
        f"{i}@{p}" for i, p in zip(source["id"], acts.positions, strict=True)
    ]
    np.testing.assert_array_equal(stored.activations.resid, acts.resid)
    np.testing.assert_array_equal(stored.activations.n_tokens, acts.n_tokens)
    np.testing.assert_array_equal(stored.activations.positions, acts.positions)
    assert stored.extraction_fields() == {
        "tokens": "all",
        "processing": "tl-compat",
        "reservoir": 6,
    }

    cache = Cache(tmp_path / "cache")
    cache.put_activations("k", acts, data.frame)
    entry = cache.get_activation_set("k")
    assert entry is not None
    assert entry.dataset.frame.equals(frame)
    np.testing.assert_array_equal(cache.get_activations("k").resid, acts.resid)


def _write_rows(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir()
    resid = np.arange(2 * len(rows) * 3, dtype=np.float32).reshape(2, len(rows), 3)
    np.save(folder / activations.ARRAY_NPY, resid)
    (folder / activations.SENTENCES).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / activations.MANIFEST).write_text(
        json.dumps(
            {"format_version": 1, "model": "m", "n_layers": 2, "d_model": 3, "tokens": "all"}
        )
    )
    return folder


def test_duplicate_rule_includes_the_token_position(tmp_path):
    row = {"subject": "s", "attribute": "a", "text": "same text"}
    ok = _write_rows(
        tmp_path / "ok",
        [{**row, "id": "x@1", "token_position": 1}, {**row, "id": "x@2", "token_position": 2}],
    )
    assert activations.read(ok).dataset.frame["token_position"].tolist() == [1, 2]
    twice = _write_rows(
        tmp_path / "twice",
        [{**row, "id": "x@1", "token_position": 1}, {**row, "id": "y@1", "token_position": 1}],
    )
    with pytest.raises(activations.ActivationSetError, match="token_position"):
        activations.read(twice)
    partial = _write_rows(
        tmp_path / "partial", [{**row, "id": "x@1", "token_position": 1}, {**row, "id": "x"}]
    )
    with pytest.raises(activations.ActivationSetError, match="non-negative integer"):
        activations.read(partial)


def _claim(name: str):
    return claim_module(name, "reservoir_claim")


def test_build_and_claims_on_an_all_extraction(tmp_path, shared_cache, tiny_models):
    data = _sentences(3, pairs=4)
    config = RunConfig(
        models=("tiny-gpt2",),
        dataset=None,
        extraction=ExtractionSettings("all", reservoir=10),
        fit=FitSettings(families=("norm", "logistic")),
        report_dir=tmp_path / "report",
        cache_dir=shared_cache,
        baseline_dir=tmp_path / "baselines",
    )
    fresh = evidence.build("tiny-gpt2", data, config, silent)
    again = evidence.build("tiny-gpt2", data, config, silent)  # from the cache entry
    assert again.timings["extract"] == 0.0
    for built in (fresh, again):
        assert built.activations.resid.shape == (2, 40, 64)
        assert len(built.dataset) == 40 and "token_position" in built.dataset.frame
        assert len(built.pairs) == 4
        assert [len(r) for r in built.pairs["rows"]] == [10] * 4
    assert fresh.dataset.frame.equals(again.dataset.frame)
    np.testing.assert_array_equal(fresh.activations.resid, again.activations.resid)
    for name in ("residual_norm_growth", "distinctiveness_shrinks"):
        module = _claim(name)
        result = module.evaluate(again)
        assert result.model == "tiny-gpt2" and result.verdict is not None
