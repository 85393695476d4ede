"""Small and degenerate activation sets give verdicts, never exceptions (issue 21, item 1).

Before this, a 64-value sample stopped logistic-dominance and gaussian-with-outliers with
the fit engine's 100-value minimum, and heavy-tailed-mixture-beats-gmm raised from its
projection on pairs of one to three sentences. A statistic the data cannot decide raises
InsufficientDataError, and ``claim.decide`` turns it into INCONCLUSIVE with the reason.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import synthetic
from harness.claim import ClaimResult, Verdict, decide
from harness.extraction import ActivationSet
from harness.stats.errors import InsufficientDataError
from tests.conftest import CLAIM_NAMES, claim_module

CLAIMS = {name: claim_module(name, "small") for name in CLAIM_NAMES}
ATTRIBUTES = ("in english", "in spanish", "in all lower case", "in japanese")


def _same_vector(acts: ActivationSet) -> ActivationSet:
    resid = np.array(acts.resid)
    resid[:] = resid[:, :1]
    return ActivationSet(resid, acts.n_tokens, acts.meta | {"edge": "identical"})


def _constant_layer(acts: ActivationSet) -> ActivationSet:
    resid = np.array(acts.resid)
    resid[-1] = 1.0
    return ActivationSet(resid, acts.n_tokens, acts.meta | {"edge": "constant-layer"})


def _run_all(data, acts) -> dict[str, ClaimResult]:
    with tempfile.TemporaryDirectory() as tmp:
        evidence = synthetic.evidence(data, acts, Path(tmp))
        return {name: decide(m.SPEC, m.evaluate, evidence) for name, m in CLAIMS.items()}


# The sets the issue reproduced the crashes with, and their neighbours.
SETS: dict[str, Callable[[], tuple]] = {
    "1 sentence per pair": lambda: (synthetic.language_dataset(n_subjects=6, per_pair=1), 4, 64),
    "2 sentences per pair": lambda: (synthetic.language_dataset(n_subjects=6, per_pair=2), 4, 64),
    "d_model 16, 5 per pair": lambda: (synthetic.language_dataset(n_subjects=6), 4, 16),
    "one attribute": lambda: (synthetic.language_dataset(("in japanese",), n_subjects=6), 4, 64),
    "one subject": lambda: (synthetic.language_dataset(n_subjects=1), 4, 64),
    "one layer": lambda: (synthetic.language_dataset(n_subjects=6), 1, 64),
}


@pytest.mark.parametrize("name", list(SETS))
def test_small_sets_give_verdicts(name):
    data, n_layers, d_model = SETS[name]()
    acts = synthetic.activations(data, "logistic", n_layers=n_layers, d_model=d_model)
    for claim, result in _run_all(data, acts).items():
        assert isinstance(result.verdict, Verdict), claim
        if result.verdict is Verdict.INCONCLUSIVE:
            assert result.notes, f"{claim} on {name}: INCONCLUSIVE without a reason"


def test_too_few_values_to_fit_read_inconclusive_with_the_reason():
    data = synthetic.language_dataset(n_subjects=6, per_pair=1)  # 64-value samples
    acts = synthetic.activations(data, "logistic", n_layers=4, d_model=64)
    results = _run_all(data, acts)
    for claim in ("logistic_dominance", "gaussian_with_outliers"):
        assert results[claim].verdict is Verdict.INCONCLUSIVE
        assert "at least 100 are needed" in results[claim].notes[-1]


def test_one_sentence_per_pair_cannot_support_distinctiveness():
    # The within-pair bootstrap has nothing to resample: its interval was a point, and the
    # claim read SUPPORTED on noise.
    data = synthetic.language_dataset(n_subjects=6, per_pair=1)
    acts = synthetic.activations(data, "logistic", n_layers=4, d_model=64)
    with tempfile.TemporaryDirectory() as tmp:
        module = CLAIMS["distinctiveness_shrinks"]
        result = module.evaluate(synthetic.evidence(data, acts, Path(tmp)), module.SPEC)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "a pair with 1 sentence" in result.notes[-1]


def test_decide_lets_other_errors_through():
    # Only "the data cannot decide" becomes a verdict; a bug stays a bug.
    module = CLAIMS["anisotropy"]
    data = synthetic.language_dataset(n_subjects=4, per_pair=2)
    acts = synthetic.activations(data, "logistic", n_layers=2, d_model=8)

    def broken(evidence, spec):
        raise KeyError("a bug")

    def starved(evidence, spec):
        raise InsufficientDataError("3 rows")

    with tempfile.TemporaryDirectory() as tmp:
        evidence = synthetic.evidence(data, acts, Path(tmp))
        with pytest.raises(KeyError):
            decide(module.SPEC, broken, evidence)
        result = decide(module.SPEC, starved, evidence)
    assert result.verdict is Verdict.INCONCLUSIVE and result.notes == (
        "not enough data to decide: 3 rows",
    )


EDITS = {"none": lambda a: a, "identical": _same_vector, "constant layer": _constant_layer}


@settings(
    max_examples=int(os.environ.get("LMCLAIMS_FUZZ_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n_subjects=st.integers(1, 5),
    attributes=st.lists(st.sampled_from(ATTRIBUTES), min_size=1, max_size=4, unique=True),
    per_pair=st.integers(1, 4),
    n_layers=st.integers(1, 4),
    d_model=st.integers(2, 40),
    sampler=st.sampled_from(["logistic", "normal", "t3"]),
    edit=st.sampled_from(list(EDITS)),
)
def test_random_small_sets_give_verdicts(
    n_subjects, attributes, per_pair, n_layers, d_model, sampler, edit
):
    data = synthetic.language_dataset(tuple(attributes), n_subjects, per_pair)
    acts = EDITS[edit](synthetic.activations(data, sampler, n_layers=n_layers, d_model=d_model))
    for result in _run_all(data, acts).values():
        assert isinstance(result.verdict, Verdict)
