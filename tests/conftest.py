import os
from pathlib import Path

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
def tiny_models(shared_cache: Path) -> dict:
    from harness import models

    return {
        name: models.load(models.resolve(name), shared_cache)
        for name in ("tiny-gpt2", "tiny-pythia")
    }
