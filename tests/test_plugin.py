"""The plugin end to end in isolated pytest sessions (pytester), on tiny random models."""

import json
from pathlib import Path

import pytest

# In-process pytester runs drop modules first imported inside them, and torch's C
# extension cannot be imported twice (nor loky registered twice at exit): load the heavy
# stack before any pytester snapshot.
import torch  # noqa: F401
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401
from joblib.externals import loky  # noqa: F401

from tests.conftest import claim_module, make_project


@pytest.fixture
def project(pytester: pytest.Pytester, shared_cache: Path) -> pytest.Pytester:
    make_project(pytester.path, shared_cache)
    return pytester


def test_run_writes_a_report(project):
    result = project.runpytest("claims", "-p", "no:cacheprovider")
    # Random weights give near-Gaussian activations: the claim is refuted, and with no
    # baseline that is a failing test carrying the evidence.
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*logistic-dominance on tiny-gpt2: REFUTED*",
            "lmclaims: 1 claim(s) x 1 model(s): 1 REFUTED -> *report.md",
        ]
    )
    report = project.path / "reports" / "tiny-gpt2"
    text = (report / "report.md").read_text()
    assert "| logistic-dominance | tiny-gpt2 | **REFUTED** |" in text
    results = json.loads((report / "results.json").read_text())
    assert results["schema_version"] == 1
    assert results["results"][0]["verdict"] == "REFUTED"
    assert results["provenance"]["settings"]["extraction"]["tokens"] == "seed"


def test_missing_baseline_is_written_and_reported(project):
    result = project.runpytest("claims", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        ["lmclaims: no baseline entry for logistic-dominance on tiny-gpt2: recorded*"]
    )
    stored = json.loads((project.path / "baselines" / "tiny-gpt2.json").read_text())
    entry = stored["claims"]["logistic-dominance"]
    assert entry["verdict"] == "REFUTED" and entry["tolerance"] >= 0
    assert stored["settings"]["tokens"] == "seed"
    # The next run compares against what was written: the refutation is now expected.
    again = project.runpytest("claims", "-p", "no:cacheprovider")
    again.assert_outcomes(xfailed=1)
    assert "no baseline entry" not in again.stdout.str()


def test_baseline_update_then_compare(project):
    project.runpytest("claims", "--lm-baseline=update", "-p", "no:cacheprovider")
    stored = json.loads((project.path / "baselines" / "tiny-gpt2.json").read_text())
    assert stored["claims"]["logistic-dominance"]["verdict"] == "REFUTED"
    # The recorded refutation is now an expected failure: the run is green.
    result = project.runpytest("claims", "-p", "no:cacheprovider")
    result.assert_outcomes(xfailed=1)
    assert result.ret == 0


def test_compare_under_other_settings_is_refused(project):
    project.runpytest("claims", "--lm-baseline=update", "-p", "no:cacheprovider")
    result = project.runpytest("claims", "--lm-tokens=last", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*made under other settings (tokens: baseline 'seed', now 'last')*"]
    )


def test_changed_verdict_fails_naming_both(project):
    (project.path / "baselines").mkdir()
    (project.path / "baselines" / "tiny-gpt2.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "model": "tiny-gpt2",
                "claims": {
                    "logistic-dominance": {
                        "claim_version": claim_module("logistic_dominance").SPEC.version,
                        "verdict": "SUPPORTED",
                        "effect": 0.9,
                        "ci": [0.8, 0.95],
                    }
                },
            }
        )
    )
    result = project.runpytest("claims", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*verdict changed*baseline SUPPORTED, now REFUTED*"])


def test_two_models_one_extraction_each(project):
    result = project.runpytest(
        "claims",
        "--lm-models",
        "tiny-gpt2,tiny-pythia",
        "--lm-baseline=off",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=2)
    assert (project.path / "reports" / "tiny-gpt2+tiny-pythia" / "report.md").is_file()


def test_unknown_model_stops_before_loading(project):
    result = project.runpytest("claims", "--lm-models", "tiny-gtp2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown model 'tiny-gtp2'. Did you mean 'tiny-gpt2'?*"])


def test_bad_dataset_stops_before_loading(project):
    (project.path / "bad.jsonl").write_text('{"subject": "x", "attribute": "y"}\n')
    result = project.runpytest("claims", "--lm-dataset", "bad.jsonl", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad.jsonl:1: 'text' must be a non-empty string*"])


def test_missing_weights_fail_with_advice(project):
    result = project.runpytest("claims", "--lm-models", "pythia-1b", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*weights for 'pythia-1b'*are not available*"])
    # The report still lists the claim, as an ERROR with the load failure's line.
    payload = json.loads((project.path / "reports" / "pythia-1b" / "results.json").read_text())
    [missing] = payload["unfinished"]
    assert missing["outcome"] == "ERROR" and missing["reason"].startswith("in setup: pythia-1b:")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--lm-families=norm,lgistic", "*unknown distribution family 'lgistic'; valid names:*"),
        ("--lm-tokens=first", "*unknown tokens 'first'; choose one of: seed, last, mean*"),
        ("--lm-baseline=sometimes", "*unknown baseline 'sometimes'*"),
        # Issue 21 item 7: the option named, not "invalid literal for int()".
        ("--lm-sentences-per-pair=abc", "*--lm-sentences-per-pair must be a whole number*"),
        ("--lm-seed=abc", "*--lm-seed must be a whole number, got 'abc'*"),
        ("--lm-batch-size=", "*--lm-batch-size needs a whole number*"),
        ("--lm-claims=,", "*--lm-claims ',' names no claim id*"),
        # Before the model loads, not after it.
        ("--lm-device=cuda", "*--lm-device cuda: torch * sees no CUDA device here*"),
    ],
)
def test_bad_settings_are_usage_errors(project, option, message):
    result = project.runpytest("claims", option, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_model_named_twice_runs_once(project):
    result = project.runpytest(
        "claims", "--lm-models=tiny-gpt2,tiny-gpt2", "--lm-baseline=off", "-p", "no:cacheprovider"
    )
    # One logistic-dominance test, not two (the verdict itself does not matter here).
    outcomes = result.parseoutcomes()
    assert sum(outcomes.get(k, 0) for k in ("passed", "failed", "skipped", "xfailed")) == 1
