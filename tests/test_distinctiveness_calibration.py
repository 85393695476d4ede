"""The distinctiveness-shrinks claim on planted truths: structure that decays with depth is
SUPPORTED, constant structure is not, and a planted dominant attribute ranks first."""

import numpy as np
import pandas as pd
import pytest

from harness import synthetic
from harness.claim import Verdict
from harness.dataset import Dataset
from harness.extraction import ActivationSet
from harness.synthetic import planted_cells as planted
from tests.conftest import claim_module

claim = claim_module("distinctiveness_shrinks")

ATTRIBUTES = [
    "in english",
    "in an angry tone",
    "in a kind tone",
    "in all lower case",
    "in a concise style",
    "in a childish style",
]


def _evidence(tmp_path, resid, subject, attribute, seed=0):
    names = [ATTRIBUTES[a] for a in attribute]
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(len(subject))],
            "subject": [f"subject {s}" for s in subject],
            "attribute": names,
            "text": "synthetic",
        }
    )
    data = Dataset(frame, "synthetic")
    acts = ActivationSet(resid.astype(np.float32), np.full(len(frame), 8), {"seed": seed})
    return synthetic.evidence(data, acts, tmp_path, seed=seed)


# The calibration datasets' shape: 5 subjects x 6 attributes x 8 sentences, 8 layers, d 48.
CELLS = {"n_subjects": 5, "n_attributes": 6, "per_cell": 8, "n_layers": 8, "d": 48}


@pytest.mark.parametrize("seed", [0, 1])
def test_decaying_structure_is_supported(tmp_path, seed):
    # Subjects attract (w_s > w_a), and the structure fades into the noise with depth:
    # expected D falls from ~0.77 to ~0.44 (closed form in tests/test_similarity.py). With
    # w_s == w_a the expected D is 0 and |D| only measures noise, which grows as it fades.
    gain = np.linspace(1.2, 0.25, 8)
    resid, s, a = planted(**CELLS, w_s=1.5, w_a=0.5, gain=gain, seed=seed)
    result = claim.evaluate(_evidence(tmp_path, resid, s, a, seed))
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    assert result.ci[1] < 1


def test_constant_structure_rarely_fires(tmp_path):
    # The verdict needs two one-sided 97.5% bounds; on a null it should fire in ~2.5% of
    # datasets. 3 or more of 20 would happen by chance with probability ~1%.
    fired = []
    for seed in range(20):
        resid, s, a = planted(**CELLS, w_s=1.5, w_a=0.5, seed=seed)
        result = claim.evaluate(_evidence(tmp_path / str(seed), resid, s, a, seed))
        fired.append(result.verdict == Verdict.SUPPORTED)
    assert sum(fired) <= 2, fired


def test_planted_dominant_attribute_ranks_first(tmp_path):
    strength = np.ones(6)
    strength[ATTRIBUTES.index("in all lower case")] = 2.5
    resid, s, a = planted(**CELLS | {"n_layers": 6}, attribute_strength=strength, seed=3)
    result = claim.evaluate(_evidence(tmp_path, resid, s, a))
    ranking = result.tables["attribute_ranking"]
    assert ranking.iloc[0]["name"] == "in all lower case"
    assert any("sub-claim" in note for note in result.notes)


def test_too_few_layers_is_inconclusive(tmp_path):
    resid, s, a = planted(n_subjects=4, n_attributes=4, per_cell=4, n_layers=2, d=16)
    result = claim.evaluate(_evidence(tmp_path, resid, s, a))
    assert result.verdict == Verdict.INCONCLUSIVE
