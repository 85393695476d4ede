"""distinctive-attributes: its exact permutation p, and where it cannot apply."""

import numpy as np
import pytest

from harness import synthetic
from harness.claim import Verdict
from tests.conftest import claim_module
from tests.test_distinctiveness_calibration import ATTRIBUTES as SIX_ATTRIBUTES
from tests.test_distinctiveness_calibration import _evidence

claim = claim_module("distinctive_attributes")


def test_triple_p_is_the_share_of_triples_ranking_at_least_as_high():
    ranks = np.arange(1, 13)
    assert claim.triple_p(ranks, [0, 1, 2]) == pytest.approx(1 / 220)  # the best triple
    assert claim.triple_p(ranks, [9, 10, 11]) == 1.0  # the worst: every triple is as good
    # mean rank 2.33 (ranks 1, 2, 4): only {1,2,3} and {1,2,4} are as good
    assert claim.triple_p(ranks, [0, 1, 3]) == pytest.approx(2 / 220)


def test_dataset_without_the_named_attributes_is_not_applicable(tmp_path):
    data = synthetic.dataset(n_subjects=4, n_attributes=6, per_pair=3)
    acts = synthetic.activations(data, "logistic", n_layers=3, d_model=32, seed=1)
    result = claim.evaluate(synthetic.evidence(data, acts, tmp_path))
    assert result.verdict == Verdict.NOT_APPLICABLE
    assert "lacks" in result.notes[0]


ATTRIBUTES = [*SIX_ATTRIBUTES, "in spanish", "in a formal tone"]


# With subject and attribute vectors of equal weight, an attribute of strength 1 balances its
# subject's pull (D ~ 0); a strong one repulses (D < 0), so |D| ranks it high.
@pytest.mark.parametrize(
    ("named", "others", "expected"),
    [(3.0, 1.0, Verdict.SUPPORTED), (1.0, 3.0, Verdict.REFUTED)],
    ids=["named-distinctive", "named-balanced"],
)
def test_planted_named_attributes(tmp_path, named, others, expected):
    strength = np.full(len(ATTRIBUTES), others)
    strength[[ATTRIBUTES.index(a) for a in claim.NAMED]] = named
    resid, s, a = synthetic.planted_cells(
        n_subjects=5,
        n_attributes=len(ATTRIBUTES),
        per_cell=6,
        n_layers=3,
        d=64,
        attribute_strength=strength,
        seed=4,
    )
    result = claim.evaluate(_evidence(tmp_path, resid, s, a, attributes=ATTRIBUTES))
    assert result.verdict == expected, result.summary()
