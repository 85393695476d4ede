"""Same settings, same results.json (timings and timestamps aside); --lm-seed moves only
the resampled quantities (issue 9, item 6)."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch  # noqa: F401  (the heavy stack is loaded before any pytester snapshot)
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401
from joblib.externals import loky  # noqa: F401

from harness import models
from tests.conftest import ROOT, make_project

# Every field of results.json that may differ between two runs with the same settings: when
# the run started, when its activation set was written, and how long its stages took.
# Anything else differing is a bug.
VOLATILE_PROVENANCE = ("started",)
VOLATILE_MODEL = ("timings_s", "seconds_boot", "seconds_forward", "created")


def strip_volatile(payload: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(payload))
    for key in VOLATILE_PROVENANCE:
        out["provenance"].pop(key)
    for meta in out["provenance"]["models"].values():
        for key in VOLATILE_MODEL:
            meta.pop(key)
    return out


# Table columns holding resampled quantities (a bootstrap interval's ends, a p-value).
RESAMPLED_COLUMN = re.compile(r"(^|_)(ci|pvalue|p)(_|$)")


def point_values(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The tables without their resampled columns."""
    return {
        name: [{k: v for k, v in row.items() if not RESAMPLED_COLUMN.search(k)} for row in rows]
        for name, rows in tables.items()
    }


def _run(pytester: pytest.Pytester, shared: Path, name: str, *args: str) -> dict[str, Any]:
    """A run on a fresh cache (everything extracted and fitted again), report in ``name``."""
    cache = pytester.path / f"cache-{name}"
    shutil.copytree(shared / "tokenizers", cache / "tokenizers")
    make_project(pytester.path, cache)
    # A second claim whose pair bootstrap is not degenerate on random weights (the
    # logistic share is 0 with a [0, 0] interval whatever the resamples).
    shutil.copy(ROOT / "claims" / "test_anisotropy.py", pytester.path / "claims")
    result = pytester.runpytest(
        "claims",
        "--lm-baseline=off",
        f"--lm-report-dir=reports/{name}",
        "-p",
        "no:cacheprovider",
        *args,
    )
    assert "lmclaims: 2 claim(s) x 1 model(s)" in result.stdout.str(), result.stdout.str()
    return json.loads((pytester.path / "reports" / name / "results.json").read_text())


@pytest.fixture
def shared(shared_cache: Path) -> Path:
    models.local_tokenizer(shared_cache)  # the saved tokenizer each fresh cache copies
    return shared_cache


def test_two_runs_give_byte_identical_results_apart_from_timings(pytester, shared):
    first = _run(pytester, shared, "a")
    second = _run(pytester, shared, "b")
    # The report and cache folders are settings, told apart on purpose (a fresh cache each,
    # so that both runs extract and fit).
    for payload in (first, second):
        for folder in ("report_dir", "cache_dir"):
            payload["provenance"]["settings"].pop(folder)
    a = json.dumps(strip_volatile(first), indent=2)
    b = json.dumps(strip_volatile(second), indent=2)
    assert a == b
    # The volatile fields exist (a stripping that removes nothing proves nothing).
    assert first["provenance"]["models"]["tiny-gpt2"]["timings_s"]["extract"] > 0


def test_the_seed_changes_resampled_quantities_and_nothing_else(pytester, shared):
    from harness.evidence import TABLE_SEED

    zero = _run(pytester, shared, "seed0", "--lm-seed=0")
    one = _run(pytester, shared, "seed1", "--lm-seed=1")
    assert TABLE_SEED == 0
    assert [r["claim_id"] for r in zero["results"]] == [r["claim_id"] for r in one["results"]]
    for r0, r1 in zip(zero["results"], one["results"], strict=True):
        # Not resampled: the effects and every table (fits, per-pair winners, per-layer norms).
        assert r0["effect"] == r1["effect"] and r0["n"] == r1["n"], r0["claim_id"]
        assert point_values(r0["tables"]) == point_values(r1["tables"]), r0["claim_id"]
    assert all(r["tables"] for r in zero["results"])  # there were tables to compare
    # The same sentences were measured: the dataset subset does not follow the seed.
    assert zero["provenance"]["dataset"] == one["provenance"]["dataset"]
    key = "activation_key"
    assert (
        zero["provenance"]["models"]["tiny-gpt2"][key]
        == one["provenance"]["models"]["tiny-gpt2"][key]
    )
    # Resampled: the pair bootstraps' intervals and p-values, for at least one claim.
    moved = [
        r0["claim_id"]
        for r0, r1 in zip(zero["results"], one["results"], strict=True)
        if (r0["ci"], r0["pvalue"]) != (r1["ci"], r1["pvalue"])
    ]
    assert moved, "no confidence interval or p-value moved with the seed"


def test_a_warm_run_gives_the_cold_runs_results(pytester, shared):
    # Tables read back from the cache must equal the computed ones: gaussian-with-outliers'
    # "removed" column (a text such as "1" on models of d_model <= 100) came back as the
    # integer 1, and results.json differed between a cold and a warm run (issue 21, item 8).
    cache = pytester.path / "cache"
    shutil.copytree(shared / "tokenizers", cache / "tokenizers")
    make_project(pytester.path, cache)
    shutil.copy(ROOT / "claims" / "test_gaussian_with_outliers.py", pytester.path / "claims")
    payloads = []
    for name in ("cold", "warm"):
        args = ["claims", "--lm-baseline=off", f"--lm-report-dir=reports/{name}"]
        result = pytester.runpytest(*args, "-p", "no:cacheprovider")
        assert "lmclaims: 2 claim(s) x 1 model(s)" in result.stdout.str(), result.stdout.str()
        payload = json.loads((pytester.path / "reports" / name / "results.json").read_text())
        payload["provenance"]["settings"].pop("report_dir")
        payloads.append(json.dumps(strip_volatile(payload), indent=2))
    cold, warm = payloads
    assert '"removed": "' in cold  # the text column is there to compare
    assert cold == warm
