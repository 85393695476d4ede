"""Numerical edge cases through every built-in claim (issue 9, item 7): constant dimensions, a
layer whose values are all equal, one dimension 1e4 times the rest (massive activations).
A claim may give up on such data, but never with a silent NaN: a non-finite effect, interval
or p-value comes with an INCONCLUSIVE / NOT_APPLICABLE verdict and a note, and the report
never prints "nan" or "inf"."""

import math
import re
from collections.abc import Callable

import numpy as np
import pytest

from harness import report, synthetic
from harness.claim import ClaimResult, Verdict
from harness.extraction import ActivationSet
from tests.conftest import CLAIM_NAMES, claim_module

N_LAYERS, D_MODEL = 5, 32
SILENT_NAN = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)


def _claim(name: str):
    return claim_module(name, "edge_claim")


def _constant_dims(resid: np.ndarray) -> None:
    resid[:, :, :8] = 3.0  # a quarter of the dimensions never move


def _flat_layer(resid: np.ndarray) -> None:
    resid[2] = 1.0  # every value of one layer equal


def _flat_last_layer(resid: np.ndarray) -> None:
    resid[-1] = -2.0  # the layer the final-layer claim decides on


def _massive_dim(resid: np.ndarray) -> None:
    resid[:, :, 5] *= 1e4  # one dimension dwarfs the rest, at every layer


EDGES: dict[str, Callable[[np.ndarray], None]] = {
    "constant-dims": _constant_dims,
    "flat-layer": _flat_layer,
    "flat-last-layer": _flat_last_layer,
    "massive-dim": _massive_dim,
}


@pytest.fixture(scope="module", params=list(EDGES))
def edge_evidence(request, tmp_path_factory):
    # Named attributes (one Japanese), so the language claim has something to compare.
    data = synthetic.language_dataset(n_subjects=6, per_pair=4)
    acts = synthetic.activations(data, "logistic", n_layers=N_LAYERS, d_model=D_MODEL)
    resid = np.array(acts.resid)
    EDGES[request.param](resid)
    meta = acts.meta | {"edge": request.param}
    edged = ActivationSet(resid, acts.n_tokens, meta)
    return synthetic.evidence(data, edged, tmp_path_factory.mktemp(request.param))


def _not_finite(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)


def check_no_silent_nan(result: ClaimResult) -> None:
    numbers = [result.effect, result.pvalue, *(result.ci or ())]
    if any(_not_finite(v) for v in numbers):
        assert result.verdict in (Verdict.INCONCLUSIVE, Verdict.NOT_APPLICABLE), result.summary()
        assert result.notes, f"{result.claim_id}: a number was not computed and no note says why"
    shown = [result.summary(), report.summary_table([result])]
    shown += [report._table_md(table) for table in result.tables.values()]
    for text in shown:
        assert not SILENT_NAN.search(text), f"{result.claim_id}: {text}"


@pytest.mark.parametrize("name", CLAIM_NAMES)
def test_edge_case_gives_a_verdict_without_a_silent_nan(edge_evidence, name):
    result = _claim(name).evaluate(edge_evidence)
    assert isinstance(result.verdict, Verdict)
    check_no_silent_nan(result)


def test_the_check_catches_a_silent_nan():
    silent = ClaimResult("c", 1, "m", Verdict.SUPPORTED, "share", float("nan"), (0.1, 0.2), 0.01, 5)
    with pytest.raises(AssertionError):
        check_no_silent_nan(silent)
    shown_nan = ClaimResult("c", 1, "m", Verdict.INCONCLUSIVE, "x", 0.5, (math.nan, 1.0), 0.5, 5)
    with pytest.raises(AssertionError):  # a note, but the summary prints "nan"
        check_no_silent_nan(shown_nan)
