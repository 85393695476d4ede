import json
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

# Tests never reach a model hub: missing weights must fail at once, not after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so the saved tokenizer is built once."""
    return tmp_path_factory.mktemp("lmcache")


@pytest.fixture(scope="session")
def _tiny_pristine(shared_cache: Path) -> dict:
    from harness import models

    return {
        name: models.load(models.resolve(name), shared_cache)
        for name in ("tiny-gpt2", "tiny-pythia")
    }


@pytest.fixture
def tiny_models(_tiny_pristine: dict) -> dict:
    """Each test's own copy: booting TransformerLens' bridge wraps the Hugging Face model's
    modules in place, and a model booted twice computes float-noise different activations,
    which made results depend on which tests ran before."""
    import copy
    import dataclasses

    return {
        name: dataclasses.replace(loaded, hf_model=copy.deepcopy(loaded.hf_model))
        for name, loaded in _tiny_pristine.items()
    }


ROOT = Path(__file__).resolve().parents[1]


# The built-in claims, by the name claim_module takes (claims/test_<name>.py).
CLAIM_NAMES = sorted(p.stem.removeprefix("test_") for p in (ROOT / "claims").glob("test_*.py"))


def claim_module(name: str, prefix: str = "claim") -> ModuleType:
    """A built-in claim's module, ``claims/test_<name>.py``, imported apart from pytest's
    collected copy, so its ``evaluate`` and helpers can be called on synthetic evidence."""
    from harness import registry

    return registry.import_file(ROOT / "claims" / f"test_{name}.py", f"{prefix}_{name}")


def assert_same_result(warm, cold) -> None:
    """A warm (cached) ClaimResult reports exactly what the cold one did."""
    import pandas as pd

    fields = ("verdict", "effect", "ci", "pvalue", "notes")
    assert [getattr(warm, f) for f in fields] == [getattr(cold, f) for f in fields]
    assert warm.tables.keys() == cold.tables.keys()
    for name, table in cold.tables.items():
        pd.testing.assert_frame_equal(warm.tables[name], table)


def tiny_config(config_class, tokenizer, **extra):
    """A one-layer Hugging Face config of an architecture, its vocabulary the tokenizer's."""
    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    return config_class(vocab_size=len(tokenizer), intermediate_size=64, **sizes, **extra)


def make_project(
    path: Path, cache_dir: Path, per_pair: int = 3, subjects: int = 4, attributes: int = 3
) -> Path:
    """A scratch project: the logistic-dominance claim, subjects x attributes pairs of real
    sentences, and an ini selecting tiny-gpt2 with the given cache."""
    claim = ROOT / "claims" / "test_logistic_dominance.py"
    (path / "claims").mkdir(exist_ok=True)
    shutil.copy(claim, path / "claims" / claim.name)
    rows = [json.loads(line) for line in (ROOT / "harness/data/sentences.jsonl").open()]
    chosen_subjects = list(dict.fromkeys(r["subject"] for r in rows))[:subjects]
    chosen_attributes = list(dict.fromkeys(r["attribute"] for r in rows))[:attributes]
    keep = [
        r for r in rows if r["subject"] in chosen_subjects and r["attribute"] in chosen_attributes
    ]
    (path / "data.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in keep) + "\n"
    )
    (path / "pytest.ini").write_text(
        "[pytest]\n"
        # importlib mode: the outer session has already imported claims/test_*.py under
        # the same basenames, which the default mode would refuse as a mismatch.
        "addopts = --import-mode=importlib\n"
        "lm_models = tiny-gpt2\n"
        "lm_dataset = data.jsonl\n"
        f"lm_sentences_per_pair = {per_pair}\n"
        f"lm_cache_dir = {cache_dir}\n"
    )
    return path
