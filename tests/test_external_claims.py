"""Claims from outside the harness: an installed package's entry point, ``--pyargs``,
``--lm-claims`` selection, ``--lm-list-claims`` and a claim version that outgrew its baseline.

The "installed package" is a folder on sys.path holding the package and a ``*.dist-info``
with an ``entry_points.txt``: what pip writes, which is all importlib.metadata reads.
"""

import json
import sys
from pathlib import Path

import pytest

# Loaded before any pytester snapshot (see tests/test_plugin.py): torch's C extension and
# loky cannot be imported twice in one process.
import torch  # noqa: F401
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401
from joblib.externals import loky  # noqa: F401

from tests.conftest import claim_module, make_project

# A deliberately cheap claim (activations only), so each run costs one tiny extraction.
CLAIM_MODULE = '''
"""Example third-party claim: mean |activation| grows from the first to the last layer."""

import numpy as np

from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test

SPEC = ClaimSpec(
    id="{claim_id}",
    version={version},
    title="Mean absolute activation grows with depth",
    source="lmclaims test suite (example package)",
    quote="Activations get larger in later layers.",
    statistic="Ratio of mean |x| at the last layer to the first; SUPPORTED when above 1.",
    needs=("activations",),
)


def evaluate(evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    resid = np.abs(np.asarray(evidence.activations.resid, dtype=np.float64))
    ratio = float(resid[-1].mean() / resid[0].mean())
    verdict = Verdict.SUPPORTED if ratio > 1 else Verdict.REFUTED
    return spec.result(evidence.model, verdict, "last/first mean |x|", n=resid.shape[1],
                       effect=ratio)


test_{name} = claim_test(SPEC, evaluate)
'''


def write_claim(path: Path, claim_id: str = "example-growth", version: int = 1) -> Path:
    name = claim_id.replace("-", "_")
    path.write_text(CLAIM_MODULE.format(claim_id=claim_id, version=version, name=name))
    return path


def install_example(site: Path) -> None:
    """The package ``lmclaims_example`` with one claim, declared in ``lmclaims.claims``."""
    package = site / "lmclaims_example"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write_claim(package / "test_growth.py")
    dist = site / "lmclaims_example-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lmclaims-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[lmclaims.claims]\nexample-growth = lmclaims_example.test_growth\n"
    )


@pytest.fixture
def project(pytester: pytest.Pytester, shared_cache: Path) -> pytest.Pytester:
    make_project(pytester.path, shared_cache)
    site = pytester.path / "site"
    install_example(site)
    pytester.syspathinsert(site)
    return pytester


def results_of(project: pytest.Pytester) -> list[dict]:
    data = json.loads((project.path / "reports" / "tiny-gpt2" / "results.json").read_text())
    return data["results"]


def test_selected_entry_point_claim_runs_without_its_path(project):
    result = project.runpytest(
        "claims", "--lm-claims", "example-growth", "--lm-baseline=off", "-p", "no:cacheprovider"
    )
    # logistic-dominance (collected from claims/) is deselected; the installed claim runs.
    outcomes = result.parseoutcomes()
    assert outcomes.get("deselected") == 1
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 1
    result.stdout.fnmatch_lines(["lmclaims: 1 claim(s) x 1 model(s): *"])
    ran = results_of(project)
    assert [(r["claim_id"], r["claim_version"]) for r in ran] == [("example-growth", 1)]
    report = (project.path / "reports" / "tiny-gpt2" / "report.md").read_text()
    assert "(`example-growth` v1)" in report
    # The summary table's last column is the claim version.
    header = next(line for line in report.splitlines() if line.startswith("| claim "))
    row = next(line for line in report.splitlines() if line.startswith("| example-growth "))
    assert header.strip("| ").split("|")[-1].strip() == "claim v"
    assert row.strip("| ").split("|")[-1].strip() == "1"


def test_pyargs_runs_the_package_claims(project):
    result = project.runpytest(
        "--pyargs", "lmclaims_example", "--lm-baseline=off", "-p", "no:cacheprovider"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 1
    assert [r["claim_id"] for r in results_of(project)] == ["example-growth"]


def test_pyargs_and_selection_run_the_claim_once(project):
    # The collected file and the entry point are the same module: one claim, one test.
    result = project.runpytest(
        "--pyargs",
        "lmclaims_example",
        "--lm-claims",
        "example-growth",
        "--lm-baseline=off",
        "-p",
        "no:cacheprovider",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 1


def test_list_claims_shows_files_and_entry_points(project):
    result = project.runpytest("claims", "--lm-list-claims", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "claim*version*needs*source*defined in*",
            "example-growth*1*activations*lmclaims test suite*entry point example-growth = "
            "lmclaims_example.test_growth (lmclaims-example 0.1)",
            f"logistic-dominance*{claim_module('logistic_dominance').SPEC.version}*"
            "activations, fits*Beyond Gaussian*"
            "claims/test_logistic_dominance.py",
        ]
    )
    # Listing runs nothing: no model is loaded and no report is written.
    assert not (project.path / "reports").exists()


def test_cli_list_prints_the_same_table(project, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(project.path / "site"))
    result = project.run(sys.executable, "-m", "harness.cli", "list", "claims")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["example-growth*entry point*", "logistic-dominance*claims/test_logistic_dominance.py"]
    )


def test_unknown_claim_id_is_a_usage_error_with_a_suggestion(project):
    result = project.runpytest("claims", "--lm-claims", "example-grwth", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown claim 'example-grwth'. Did you mean 'example-growth'?*"])


def test_duplicate_claim_id_names_both_sources(project):
    write_claim(project.path / "claims" / "test_copy.py")
    result = project.runpytest("claims", "--lm-claims", "example-growth", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*claim id 'example-growth' is declared twice: by claims/test_copy.py and by "
            "entry point example-growth = lmclaims_example.test_growth (lmclaims-example 0.1)*",
        ]
    )


def test_duplicate_among_collected_files_is_an_error_without_selection(project):
    write_claim(project.path / "claims" / "test_one.py", "local-growth")
    write_claim(project.path / "claims" / "test_two.py", "local-growth")
    result = project.runpytest("claims", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*'local-growth' is declared twice: by claims/test_one.py and by claims/test_two.py*"]
    )


def test_a_new_claim_version_invalidates_its_baseline_entry(project):
    claim = write_claim(project.path / "claims" / "test_local.py", "local-growth", version=1)
    args = ("claims", "--lm-claims", "local-growth", "-p", "no:cacheprovider")
    project.runpytest(*args, "--lm-baseline=update")
    stored = json.loads((project.path / "baselines" / "tiny-gpt2.json").read_text())
    assert stored["claims"]["local-growth"]["claim_version"] == 1
    assert project.runpytest(*args).ret == 0  # same version: matches its baseline

    write_claim(claim, "local-growth", version=2)
    result = project.runpytest(*args)
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*claim local-growth is now version 2 but the baseline records version 1; "
            "review the change and rerun with --lm-baseline=update*"
        ]
    )
    project.runpytest(*args, "--lm-baseline=update")
    stored = json.loads((project.path / "baselines" / "tiny-gpt2.json").read_text())
    assert stored["claims"]["local-growth"]["claim_version"] == 2
    assert project.runpytest(*args).ret == 0


def test_a_broken_claim_package_only_matters_when_claims_are_listed_or_selected(project):
    site = project.path / "site"
    (site / "broken_claims.py").write_text("raise ImportError('missing dependency xyz')\n")
    dist = site / "broken_claims-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-claims\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lmclaims.claims]\nbroken = broken_claims\n")
    listing = project.runpytest("claims", "--lm-list-claims", "-p", "no:cacheprovider")
    assert listing.ret == pytest.ExitCode.USAGE_ERROR
    listing.stdout.fnmatch_lines(
        [
            "lmclaims: entry point broken = broken_claims (broken-claims 1.0) failed to import: "
            "ImportError: missing dependency xyz"
        ]
    )
    selected = project.runpytest(
        "claims", "--lm-claims", "example-growth", "-p", "no:cacheprovider"
    )
    assert selected.ret == pytest.ExitCode.USAGE_ERROR
    assert project.runpytest("claims", "--collect-only", "-p", "no:cacheprovider").ret == 0
