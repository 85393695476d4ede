"""Half-precision weights (--lm-dtype) and devices (--lm-device): clear handling, float32
activations, no silent NaN, and cache keys that stay as they were for float32."""

import json
from pathlib import Path

import numpy as np
import pytest

# Loaded before any pytester snapshot (see test_plugin.py).
import torch
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401
from joblib.externals import loky  # noqa: F401

from harness import extraction, models
from harness.config import ConfigError, ExtractionSettings
from harness.progress import silent
from tests.conftest import ROOT, make_project

TEXTS = [json.loads(line)["text"] for line in (ROOT / "harness/data/sentences.jsonl").open()][:24]


def _extract(name: str, dtype: str, cache: Path, scale_layer: int | None = None):
    loaded = models.load(models.resolve(name), cache, dtype)
    if scale_layer is not None:
        # A planted overflow: this block's MLP output grows far past float16's 65504
        # while every weight stays inside float16's range (at most ~4e4).
        mlp = loaded.hf_model.transformer.h[scale_layer].mlp
        with torch.no_grad():
            mlp.c_fc.weight.mul_(30.0)
            mlp.c_proj.weight.mul_(1e6)
        assert torch.isfinite(mlp.c_proj.weight).all()
    return extraction.extract(loaded, TEXTS, ExtractionSettings(dtype=dtype), progress=silent)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_give_float32_activations_near_float32(dtype, shared_cache):
    reference = _extract("tiny-gpt2", "float32", shared_cache).resid
    acts = _extract("tiny-gpt2", dtype, shared_cache)
    assert acts.resid.dtype == np.float32
    assert np.isfinite(acts.resid).all()
    assert acts.meta["weights_dtype"] == dtype and acts.meta["dtype"] == "float32"
    # Rounding error of the weights only: bfloat16 keeps 8 significant bits (~0.4%),
    # float16 11; a few percent of the activations' scale after two blocks.
    scale = np.abs(reference).max()
    error = np.abs(acts.resid - reference).max()
    assert 0 < error < 0.05 * scale
    # ... and the values are not just the same array: dtype really reached the model.
    assert not np.array_equal(acts.resid, reference)


def test_float16_overflow_is_refused_naming_the_layer(shared_cache):
    with pytest.raises(extraction.ExtractionError, match=r"first at layer 1 .*--lm-dtype"):
        _extract("tiny-gpt2", "float16", shared_cache, scale_layer=1)
    # The same planted weights in float32 are finite: the check is about the dtype's range.
    assert np.isfinite(_extract("tiny-gpt2", "float32", shared_cache, scale_layer=1).resid).all()


def test_float32_cache_key_fields_unchanged_and_half_precision_keyed():
    # Existing float32 cache entries and baselines hold exactly these fields.
    assert ExtractionSettings().key_fields() == {"tokens": "seed", "processing": "tl-compat"}
    assert ExtractionSettings(device="cuda").key_fields() == ExtractionSettings().key_fields()
    assert ExtractionSettings(dtype="bfloat16").key_fields()["dtype"] == "bfloat16"
    assert (
        ExtractionSettings(dtype="float16").key_fields()
        != ExtractionSettings(dtype="bfloat16").key_fields()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float64"}, "unknown dtype 'float64'; choose one of: float32, bfloat16"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_dtype_or_device_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExtractionSettings(**kwargs)


def test_thread_setting_applies_to_extraction_only(shared_cache, monkeypatch):
    loaded = models.load(models.resolve("tiny-pythia"), shared_cache)
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(extraction, "_run_batch", lambda *a: seen.append(torch.get_num_threads()))
    extraction.extract(loaded, TEXTS[:4], ExtractionSettings(threads=1), progress=silent)
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        ExtractionSettings(threads=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(extraction.ExtractionError, match="sees no CUDA device"):
        extraction.check_device("cuda")


def test_dtype_is_recorded_in_the_report(pytester, shared_cache):
    make_project(pytester.path, shared_cache, per_pair=2)
    result = pytester.runpytest(
        "claims", "--lm-dtype=bfloat16", "--lm-baseline=off", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=1)  # random weights: logistic dominance refuted
    prov = json.loads((pytester.path / "reports/tiny-gpt2/results.json").read_text())["provenance"]
    assert prov["settings"]["extraction"]["dtype"] == "bfloat16"
    assert prov["settings"]["extraction"]["device"] == "cpu"
    assert prov["models"]["tiny-gpt2"]["weights_dtype"] == "bfloat16"
    assert prov["models"]["tiny-gpt2"]["device"] == "cpu"
