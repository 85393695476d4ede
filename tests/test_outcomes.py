"""Reports never hide a failure (issue 21, item 2): every (claim, model) the run selected
appears in report.md and results.json, decided or with its outcome: ERROR (the exception's
one line) or NOT RUN; an interrupted run says so at the top of both.

Before this, a claim that crashed was absent from both files ("1 claim(s)" in the summary),
and a run interrupted mid-way wrote a partial report with no marker.
"""

import json
from pathlib import Path

import pytest

# Loaded before any pytester snapshot (see tests/test_plugin.py): torch's C extension and
# loky cannot be imported twice in one process.
import torch  # noqa: F401
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401
from joblib.externals import loky  # noqa: F401

from harness import synthetic

CLAIM = """
from harness.claim import ClaimSpec, Verdict, claim_test

SPEC = ClaimSpec(id="{claim_id}", version=1, title="t", source="s", quote="q", statistic="x")


def evaluate(evidence, spec=SPEC):
    {body}
    return spec.result(evidence.model, Verdict.SUPPORTED, "e", n=1, effect=1.0)


test_{name} = claim_test(SPEC, evaluate)
"""


def _claim(path: Path, claim_id: str, body: str = "pass") -> None:
    name = claim_id.replace("-", "_")
    (path / "claims" / f"test_{name}.py").write_text(
        CLAIM.format(claim_id=claim_id, name=name, body=body)
    )


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "claims").mkdir()
    (pytester.path / "pytest.ini").write_text(
        f"[pytest]\naddopts = --import-mode=importlib\nlm_cache_dir = {pytester.path / 'cache'}\n"
    )
    data = synthetic.dataset(n_subjects=4, n_attributes=3, per_pair=2)
    acts = synthetic.activations(data, "logistic", n_layers=2, d_model=8)
    synthetic.write_activation_set(pytester.path / "set", data, acts, model="planted")
    return pytester


def _read(project: pytest.Pytester) -> tuple[str, dict]:
    out = project.path / "reports" / "planted"
    text = " ".join((out / "report.md").read_text().split())
    return text, json.loads((out / "results.json").read_text())


ARGS = ("claims", "--lm-activations", "set", "--lm-baseline=off", "-p", "no:cacheprovider")


def test_a_crashing_claim_is_reported_as_an_error(project):
    _claim(project.path, "a-crash", "raise KeyError('no column named score')")
    _claim(project.path, "b-fine")
    result = project.runpytest(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    text, payload = _read(project)
    assert "| a-crash | planted | **ERROR** | KeyError: 'no column named score' |" in text
    assert "### planted: ERROR" in text  # the claim's own section says it too
    assert payload["interrupted"] is False
    assert [r["claim_id"] for r in payload["results"]] == ["b-fine"]
    assert payload["unfinished"] == [
        {
            "claim_id": "a-crash",
            "model": "planted",
            "outcome": "ERROR",
            "reason": "KeyError: 'no column named score'",
        }
    ]
    assert "2 claim(s) x 1 model(s): 1 ERROR, 1 SUPPORTED" in result.stdout.str()


def test_claims_after_a_stop_are_not_run(project):
    _claim(project.path, "a-crash", "raise KeyError('x')")
    _claim(project.path, "b-fine")
    result = project.runpytest(*ARGS, "-x")
    result.assert_outcomes(failed=1)
    _, payload = _read(project)
    assert [(u["claim_id"], u["outcome"]) for u in payload["unfinished"]] == [
        ("a-crash", "ERROR"),
        ("b-fine", "NOT RUN"),
    ]


def test_an_interrupted_run_says_so_at_the_top(project):
    _claim(project.path, "a-fine")
    _claim(project.path, "b-interrupt", "raise KeyboardInterrupt")
    _claim(project.path, "c-after")
    result = project.runpytest_subprocess(*ARGS)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    text, payload = _read(project)
    assert text.startswith("# lmclaims verdict report > **This run was interrupted.**")
    assert payload["interrupted"] is True
    assert [r["claim_id"] for r in payload["results"]] == ["a-fine"]
    assert {u["claim_id"]: u["outcome"] for u in payload["unfinished"]} == {
        "b-interrupt": "NOT RUN",
        "c-after": "NOT RUN",
    }


# --------------------------------------- a corrupt baseline in each mode (issue 21, item 3)

CORRUPT = '{"schema_version": 1, "claims": {"b-fine": {"claim_ver'


def test_compare_with_a_corrupt_baseline_stops_before_the_work_naming_the_file(project):
    _claim(project.path, "b-fine")
    (project.path / "baselines").mkdir()
    (project.path / "baselines" / "planted.json").write_text(CORRUPT)
    args = [a for a in ARGS if a != "--lm-baseline=off"]
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baselines/planted.json: not valid JSON*--lm-baseline=update*"])
    assert not (project.path / "reports").exists()


def test_off_ignores_a_corrupt_baseline_and_update_rewrites_it(project):
    _claim(project.path, "b-fine")
    (project.path / "baselines").mkdir()
    path = project.path / "baselines" / "planted.json"
    path.write_text(CORRUPT)
    project.runpytest(*ARGS).assert_outcomes(passed=1)
    assert path.read_text() == CORRUPT
    args = [a for a in ARGS if a != "--lm-baseline=off"] + ["--lm-baseline=update"]
    project.runpytest(*args).assert_outcomes(passed=1)
    assert json.loads(path.read_text())["claims"]["b-fine"]["verdict"] == "SUPPORTED"
    assert (project.path / "reports" / "planted" / "report.md").is_file()


# ------------------------------------ output folders checked first (issue 21, item 4)


@pytest.mark.parametrize("option", ["--lm-report-dir", "--lm-cache-dir", "--lm-baseline-dir"])
def test_an_unusable_output_folder_is_a_usage_error_before_the_work(project, option):
    _claim(project.path, "b-fine")
    (project.path / "a-file").write_text("not a folder")
    result = project.runpytest(*ARGS, "--lm-baseline=compare", f"{option}=a-file/sub")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option} *a-file/sub: *a-file is a file, not a folder*"])
    assert not (project.path / "reports").exists()


def test_a_read_only_place_is_refused(project):
    # /proc refuses new files even to root, where permission bits would not.
    result = project.runpytest(*ARGS, "--lm-report-dir=/proc/lmclaims-report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lm-report-dir /proc/lmclaims-report: cannot write in /proc*"])


def test_latest_goes_inside_the_named_report_root_only(project):
    _claim(project.path, "b-fine")
    project.runpytest(*ARGS, "--lm-report-root=runs").assert_outcomes(passed=1)
    assert (project.path / "runs" / "latest").resolve() == project.path / "runs" / "planted"
    project.runpytest(*ARGS, "--lm-report-dir=mine/here").assert_outcomes(passed=1)
    assert (project.path / "mine" / "here" / "report.md").is_file()
    assert not (project.path / "mine" / "latest").exists()
