"""pytest-xdist: one model per worker, one shared cache, one report with every model."""

import json
import math
import re
import shutil
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from harness import models as models_module
from harness import parallel
from harness.claim import ClaimSpec, Verdict
from tests.conftest import ROOT, make_project


def _result():
    spec = ClaimSpec(
        "round-trip",
        2,
        "t",
        "s",
        "q",
        "stat",
        thresholds={"alpha": 0.05},
        expectations={"gpt2": Verdict.REFUTED},
        caveats=("one",),
        needs=("activations", "fits"),
    )
    table = pd.DataFrame(
        {
            "layer": np.arange(3),
            "value": [0.1, np.nan, -np.inf],
            "family": ["norm", None, "t"],
            "valid": [True, False, True],
            "share": np.array([1 / 3, 2 / 3, 1.0], dtype=np.float32),
        }
    )
    result = spec.result(
        "tiny/x",
        Verdict.INCONCLUSIVE,
        "effect",
        n=3,
        effect=math.inf,
        ci=(0.1, 0.30000000000000004),
        pvalue=None,
        notes=("a", "b"),
        tables={"per_layer": table, "empty": pd.DataFrame()},
    )
    return spec, result


def test_results_and_specs_round_trip_exactly():
    spec, result = _result()
    text = json.dumps(parallel.result_to_json(result), default=parallel._plain)
    back = parallel.result_from_json(json.loads(text))
    for name in ("claim_id", "claim_version", "model", "verdict", "effect_name", "effect"):
        assert getattr(back, name) == getattr(result, name)
    assert back.ci == result.ci and back.pvalue is None and back.notes == result.notes
    assert isinstance(back.verdict, Verdict) and isinstance(back.ci, tuple)
    pd.testing.assert_frame_equal(back.tables["per_layer"], result.tables["per_layer"])
    assert back.tables["empty"].empty
    assert parallel.spec_from_json(json.loads(json.dumps(parallel.spec_to_json(spec)))) == spec


def test_model_scope_reads_the_model_from_the_parametrize_id():
    models = ("tiny-gpt2", "gpt2", "org/m-1")
    assert parallel.model_scope("c/t.py::test_a[tiny-gpt2]", models) == "lm-model:tiny-gpt2"
    assert parallel.model_scope("c/t.py::test_b[gpt2]", models) == "lm-model:gpt2"
    assert parallel.model_scope("c/t.py::test_c[org/m-1-0.5]", models) == "lm-model:org/m-1"
    assert parallel.model_scope("c/t.py::test_d[x]", models) == "c/t.py::test_d[x]"
    assert parallel.model_scope("tests/t.py::test_e", models) == "tests/t.py::test_e"


def _workers_per_model(output: str) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for worker, model in re.findall(r"\[(gw\d+)\].*::test_\w+\[([\w-]+)\]", output):
        seen[model].add(worker)
    return seen


def test_two_workers_one_model_each_one_report(pytester, shared_cache, tmp_path):
    pytest.importorskip("xdist")
    make_project(pytester.path, tmp_path / "cache", per_pair=2)
    # A second, activation-only claim: two items per model for the scheduler to place.
    claim = ROOT / "claims" / "test_distinctiveness_shrinks.py"
    shutil.copy(claim, pytester.path / "claims" / claim.name)
    # The saved tokenizer comes from the session cache: the tiny models need no GGUF read.
    models_module.local_tokenizer(shared_cache)
    shutil.copytree(shared_cache / "tokenizers", tmp_path / "cache" / "tokenizers")
    models = "tiny-gpt2,tiny-pythia"
    run = pytester.runpytest_subprocess(
        "claims", "-n", "2", "-v", "--lm-models", models, "-p", "no:cacheprovider"
    )
    output = run.stdout.str()
    workers = _workers_per_model(output)
    assert set(workers) == {"tiny-gpt2", "tiny-pythia"}, output
    # Plain -n groups by model: each model's claims ran on one worker, extracted once.
    assert all(len(w) == 1 for w in workers.values()), workers
    assert len(list((tmp_path / "cache" / "activations").iterdir())) == 2
    run.stdout.fnmatch_lines(["lmclaims: 2 claim(s) x 2 model(s): *-> *report.md"])
    # Both models' verdicts went to the controller and were recorded there, once each.
    run.stdout.fnmatch_lines(["lmclaims: no baseline entry for *: recorded their verdicts in*"])
    for model in models.split(","):
        stored = json.loads((pytester.path / "baselines" / f"{model}.json").read_text())
        assert set(stored["claims"]) == {"logistic-dominance", "distinctiveness-shrinks"}
    reports = [
        p for p in (pytester.path / "reports").glob("*/results.json") if not p.parent.is_symlink()
    ]
    assert [p.parent.name for p in reports] == ["tiny-gpt2+tiny-pythia"]
    parallel_json = json.loads(reports[0].read_text())
    assert set(parallel_json["provenance"]["models"]) == {"tiny-gpt2", "tiny-pythia"}
    assert parallel_json["provenance"]["models"]["tiny-pythia"]["timings_s"]["extract"] > 0
    assert "Models: tiny-gpt2, tiny-pythia" in (reports[0].parent / "report.md").read_text()

    # The same run serially (warm cache) reports the same results, in the same order.
    serial = pytester.runpytest_subprocess(
        "claims",
        "--lm-models",
        models,
        "--lm-baseline=off",
        "--lm-report-dir=serial",
        "-p",
        "no:cacheprovider",
    )
    assert serial.ret in (0, 1), serial.stdout.str()
    serial_json = json.loads((pytester.path / "serial" / "results.json").read_text())
    assert serial_json["results"] == parallel_json["results"]
