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


def _evidence(tmp_path, resid, subject, attribute, seed=0, attributes=ATTRIBUTES):
    """Evidence for planted cells, the attribute codes named from ``attributes``."""
    names = [attributes[a] for a in attribute]
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


def _with_cell_effects(resid, subject, attribute, size, seed):
    """Add a fixed random vector per (subject, attribute) cell to every layer: structure
    that is no subject's or attribute's, and that stays while theirs fades."""
    rng = np.random.default_rng([seed, 5])
    cell = subject * (attribute.max() + 1) + attribute
    effects = size * rng.standard_normal((cell.max() + 1, resid.shape[2]))
    return resid + effects[cell][None].astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_decaying_structure_is_supported(tmp_path, seed):
    # The subject/attribute structure fades tenfold while per-cell effects stay: the
    # centroids' directions move from the structure to the cell effects, and D falls.
    gain = np.geomspace(1.5, 0.15, 8)
    resid, s, a = planted(**CELLS, w_s=1.5, w_a=0.5, gain=gain, seed=seed)
    resid = _with_cell_effects(resid, s, a, 1.0, seed)
    result = claim.evaluate(_evidence(tmp_path, resid, s, a, seed))
    assert result.verdict == Verdict.SUPPORTED, result.summary()
    assert result.ci[1] < 0.5


def test_structure_fading_into_sentence_noise_is_not_shrinking_distinctiveness(tmp_path):
    # The same directions, with sentence noise growing relative to them: the centroids'
    # geometry is unchanged, so the noise-free D is too (version 1's D fell here: the
    # centroids' noise, not the structure, made it fall).
    gain = np.linspace(1.2, 0.25, 8)
    resid, s, a = planted(**CELLS, w_s=1.5, w_a=0.5, gain=gain, seed=0)
    result = claim.evaluate(_evidence(tmp_path, resid, s, a, 0))
    assert result.verdict != Verdict.SUPPORTED, result.summary()
    assert result.ci[0] < 1 < result.ci[1]


def test_constant_structure_rarely_fires(tmp_path):
    # SUPPORTED needs two one-sided 97.5% bounds below 0.5 on a ratio whose truth is 1.
    fired = []
    for seed in range(20):
        resid, s, a = planted(**CELLS, w_s=1.5, w_a=0.5, seed=seed)
        result = claim.evaluate(_evidence(tmp_path / str(seed), resid, s, a, seed))
        fired.append(result.verdict == Verdict.SUPPORTED)
    assert sum(fired) == 0, fired


def test_too_few_layers_is_inconclusive(tmp_path):
    resid, s, a = planted(n_subjects=4, n_attributes=4, per_cell=4, n_layers=2, d=16)
    result = claim.evaluate(_evidence(tmp_path, resid, s, a))
    assert result.verdict == Verdict.INCONCLUSIVE
