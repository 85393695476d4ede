"""The report from synthetic results: every section, every figure, JSON valid against its schema."""

import dataclasses
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from harness import report, synthetic
from harness.claim import ClaimSpec, Verdict
from harness.session import LmSession

SPECS = [
    ClaimSpec(
        id="planted-trend",
        version=2,
        title="A planted trend",
        source="Synthetic source (2026)",
        quote="The trend goes up.",
        statistic="Slope of the planted values on depth, bootstrap CI.",
        source_numbers={"model x": "slope 0.5"},
        caveats=("a planted caveat about power",),
        multiplicity="One test decides: the slope's interval.",
    ),
    ClaimSpec(
        id="planted-shape",
        version=1,
        title="A planted shape",
        source="Synthetic source (2026)",
        quote="The shape has two humps.",
        statistic="Count of modes.",
        plots={"density": "density", "cells": "heatmap", "no_figure": "none"},
    ),
]


def _tables() -> dict[str, pd.DataFrame]:
    layers = np.arange(4)
    grid = np.linspace(-3, 3, 50)
    return {
        "per_layer": pd.DataFrame(
            {
                "layer": layers,
                "value": layers * 0.5,
                "value_ci_low": layers * 0.5 - 0.1,
                "value_ci_high": layers * 0.5 + 0.1,
                "missing": [1.0, np.nan, np.inf, 2.0],
            }
        ),
        "density": pd.DataFrame(
            {"curve": "pair 0", "x": grid, "density": np.exp(-(grid**2)), "mode": grid == grid[25]}
        ),
        "cells": pd.DataFrame(
            [
                {"layer": layer, "row": r, "column": c, "value": (r == c) - 0.5}
                for layer in range(2)
                for r in "ab"
                for c in "ab"
            ]
        ),
        "no_figure": pd.DataFrame({"layer": layers, "value": layers}),
    }


@pytest.fixture
def session(tmp_path: Path) -> LmSession:
    data = synthetic.dataset()
    ev = synthetic.evidence(data, synthetic.activations(data, "logistic"), tmp_path / "cache")
    ev.timings.update({"load": 1.0, "extract": 2.0})
    config = dataclasses.replace(ev.config, report_dir=tmp_path / "out", report_root=tmp_path)
    state = LmSession(config)
    state.dataset = data
    state.evidence = {"synthetic": ev}
    tables = _tables()
    state.results = [
        SPECS[0].result(
            "synthetic",
            Verdict.SUPPORTED,
            "slope",
            n=12,
            effect=0.5,
            ci=(0.4, 0.6),
            pvalue=0.001,
            notes=("a note",),
            tables={"per_layer": tables["per_layer"]},
        ),
        SPECS[1].result(
            "synthetic",
            Verdict.INCONCLUSIVE,
            "modes",
            n=12,
            effect=float("nan"),
            notes=("not computed: planted",),
            tables={k: tables[k] for k in ("density", "cells", "no_figure")},
        ),
    ]
    state.specs = {s.id: s for s in SPECS}
    return state


def test_every_section_and_figure_is_written(session: LmSession):
    path = report.write(session)
    text = path.read_text()
    out = path.parent
    # Summary table first, with versions, then one section per claim, then provenance.
    assert text.index("| claim") < text.index("## A planted trend") < text.index("## Provenance")
    assert "| planted-trend" in text and "**SUPPORTED**" in text and "**INCONCLUSIVE**" in text
    for spec in SPECS:
        assert f"(`{spec.id}` v{spec.version})" in text
        assert f"> {spec.quote}" in text and f"**Test.** {spec.statistic}" in text
    assert "- model x: slope 0.5" in text
    assert "**Caveats.**" in text and "- a planted caveat about power" in text
    assert "**Multiple tests.** One test decides: the slope's interval." in text
    assert "- not computed: planted" in text
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    assert {Path(f).stem.rsplit("--", 1)[1] for f in figures} == {"per_layer", "density", "cells"}
    for figure in figures:
        assert (out / figure).stat().st_size > 1000
    assert (out.parent / "latest").resolve() == out.resolve()
    # A NaN effect reads as a dash, never as "nan".
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)


def test_results_json_validates_against_its_schema(session: LmSession):
    out = report.write(session).parent
    payload = json.loads((out / "results.json").read_text())
    schema = json.loads(resources.files("harness").joinpath("data/results.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(payload, schema)
    shape = next(r for r in payload["results"] if r["claim_id"] == "planted-shape")
    assert shape["effect"] is None  # NaN is written as null
    trend = next(r for r in payload["results"] if r["claim_id"] == "planted-trend")
    assert [row["missing"] for row in trend["tables"]["per_layer"]] == [1.0, None, None, 2.0]
    prov = payload["provenance"]
    assert prov["models"]["synthetic"]["timings_s"] == {"load": 1.0, "extract": 2.0}
    assert prov["dataset"]["n_sentences"] == 48
    assert {"cpu_model", "cpus", "accelerators"} <= set(prov["machine"])


def test_the_committed_reports_validate_against_the_schema():
    schema = json.loads(resources.files("harness").joinpath("data/results.schema.json").read_text())
    root = Path(__file__).resolve().parents[1] / "reports"
    committed = [p for p in root.glob("*/results.json") if not p.parent.is_symlink()]
    assert committed, "no committed report found"
    for path in committed:
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_a_bad_payload_is_rejected():
    schema = json.loads(resources.files("harness").joinpath("data/results.schema.json").read_text())
    bad = {"schema_version": 1, "provenance": {}, "results": [{"verdict": "MAYBE"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
