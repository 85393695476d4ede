"""Models that cannot run: out of memory (loading, boot, forward) and architectures the
bridge cannot boot. Each fails that model with advice; the others go on."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformer_lens.model_bridge  # noqa: F401  (loaded before any pytester snapshot)
import transformers  # noqa: F401
from joblib.externals import loky  # noqa: F401

from harness import extraction, models
from harness.config import ExtractionSettings
from harness.progress import silent
from tests.conftest import make_project, tiny_config

TEXTS = ["The orchestra tuned for a long minute.", "Inflation erodes the value of savings."]
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"
CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError(CUDA_OOM), RuntimeError(CPU_OOM), MemoryError()],
    ids=["cuda", "cpu-allocator", "memory-error"],
)
def test_out_of_memory_in_the_forward_pass_gives_advice(tiny_models, monkeypatch, error):
    lm = tiny_models["tiny-gpt2"]
    settings = ExtractionSettings(batch_size=32)
    bridge = extraction.boot(lm, settings)

    def forward(*args, **kwargs):
        raise error

    monkeypatch.setattr(bridge, "run_with_hooks", forward)
    with pytest.raises(extraction.ExtractionError) as info:
        extraction.extract(lm, TEXTS, settings, progress=silent, bridge=bridge)
    message = str(info.value)
    assert message.startswith("out of memory in the forward pass of 'tiny-gpt2' on cpu")
    assert "batch size 32" in message and "--lm-batch-size 16" in message
    assert "--lm-device cuda" in message and "--lm-dtype bfloat16" in message
    assert info.value.__cause__ is error


def test_out_of_memory_advice_fits_the_settings():
    gpu_half = ExtractionSettings(batch_size=1, device="cuda:0", dtype="bfloat16")
    advice = extraction.out_of_memory_advice("m", "forward", gpu_half)
    # Nothing to halve and already half precision: only the device is left to change.
    assert "--lm-batch-size" not in advice and "--lm-dtype" not in advice
    assert "--lm-device cpu" in advice and "cuda:0" in advice


def test_other_runtime_errors_are_not_called_out_of_memory(tiny_models, monkeypatch):
    lm = tiny_models["tiny-gpt2"]
    bridge = extraction.boot(lm, ExtractionSettings())

    def forward(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(bridge, "run_with_hooks", forward)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        extraction.extract(lm, TEXTS, ExtractionSettings(), progress=silent, bridge=bridge)


def test_out_of_memory_while_loading_is_a_model_error(shared_cache, monkeypatch):
    def loader(spec, cache_dir, dtype):
        raise RuntimeError(CPU_OOM)

    monkeypatch.setitem(models._LOADERS, "tiny", loader)
    with pytest.raises(
        models.ModelError, match="out of memory while loading the weights of 'tiny-gpt2'"
    ) as info:
        models.load(models.resolve("tiny-gpt2"), shared_cache)
    assert "--lm-dtype bfloat16" in str(info.value)


def test_out_of_memory_at_boot_is_not_reported_as_an_unsupported_architecture(
    tiny_models, monkeypatch
):
    from transformer_lens.model_bridge import TransformerBridge

    def boot(*args, **kwargs):
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(TransformerBridge, "boot_transformers", boot)
    with pytest.raises(extraction.ExtractionError) as info:
        extraction.boot(tiny_models["tiny-gpt2"], ExtractionSettings())
    assert "out of memory in moving the weights of 'tiny-gpt2' on cpu" in str(info.value)
    assert "cannot boot" not in str(info.value)


def test_unsupported_architecture_names_the_model_and_architecture(tiny_models):
    # BioGPT is a causal LM transformers builds offline from a config, and one the installed
    # bridge has no adapter for (TransformerLens raises "Unsupported architecture").
    from transformers import BioGptConfig, BioGptForCausalLM

    tokenizer = tiny_models["tiny-gpt2"].tokenizer
    config = tiny_config(BioGptConfig, tokenizer, max_position_embeddings=64)
    model = BioGptForCausalLM(config).eval()
    model.config.architectures = ["BioGptForCausalLM"]
    spec = models.ModelSpec("tiny-biogpt", "local", "tiny-biogpt", "test model")
    loaded = models.LoadedModel(spec, model, tokenizer)
    with pytest.raises(extraction.ExtractionError) as info:
        extraction.extract(loaded, TEXTS, ExtractionSettings(), progress=silent)
    message = str(info.value)
    assert "cannot boot 'tiny-biogpt'" in message
    assert "BioGptForCausalLM" in message and "Could not determine supported arch" in message
    assert len(message) < 600  # not the bridge's list of every supported architecture


def test_a_model_out_of_memory_fails_only_its_tests(
    pytester: pytest.Pytester, shared_cache: Path, monkeypatch
):
    # A fresh cache (so both models are loaded), with the saved tokenizer copied over.
    models.local_tokenizer(shared_cache)
    cache = pytester.path / "cache"
    shutil.copytree(shared_cache / "tokenizers", cache / "tokenizers")
    make_project(pytester.path, cache)
    real = models._LOADERS["tiny"]

    def loader(spec, cache_dir, dtype):
        if spec.name == "tiny-pythia":
            raise torch.OutOfMemoryError(CUDA_OOM)
        return real(spec, cache_dir, dtype)

    monkeypatch.setitem(models._LOADERS, "tiny", loader)
    result = pytester.runpytest(
        "claims",
        "--lm-models=tiny-pythia,tiny-gpt2",
        "--lm-baseline=update",
        "-p",
        "no:cacheprovider",
    )
    # tiny-gpt2's refutation is recorded (xfail); tiny-pythia's evidence fixture fails (a
    # setup error) with the advice, once, for its tests only.
    result.assert_outcomes(errors=1, xfailed=1)
    result.stdout.fnmatch_lines(
        ["*tiny-pythia: out of memory while loading the weights of 'tiny-pythia' in float32*"]
    )
    # The other model was evaluated and reported; the failed one is listed as an ERROR.
    result.stdout.fnmatch_lines(
        ["lmclaims: 1 claim(s) x 2 model(s): 1 ERROR, 1 REFUTED -> *report.md"]
    )
    payload = json.loads(
        (pytester.path / "reports" / "tiny-pythia+tiny-gpt2" / "results.json").read_text()
    )
    [failed] = payload["unfinished"]
    assert (failed["model"], failed["outcome"]) == ("tiny-pythia", "ERROR")
    assert "out of memory while loading the weights" in failed["reason"]
