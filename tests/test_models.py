import pytest

from harness import models


def test_unknown_name_suggests_the_closest():
    with pytest.raises(models.UnknownModelError) as info:
        models.resolve("smollm2-13m")
    message = str(info.value)
    assert "Did you mean 'smollm2-135m'?" in message
    assert "gpt2" in message and "pythia-160m" in message  # lists the known names


def test_hub_ids_and_local_folders_are_accepted(tmp_path):
    assert models.resolve("my-org/my-model").hf_id == "my-org/my-model"
    assert models.resolve(str(tmp_path)).source == "local"
    assert models.resolve("pythia-160m").hf_id == "EleutherAI/pythia-160m"


def test_missing_hub_weights_say_how_to_provide_them(shared_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelUnavailableError) as info:
        models.load(models.REGISTRY["gpt2-large"], shared_cache)
    message = str(info.value)
    assert "openai-community/gpt2-large" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "local folder" in message and "huggingface-cli download" in message


def test_local_folder_without_a_model_is_a_clear_error(tmp_path, shared_cache):
    with pytest.raises(models.ModelUnavailableError, match=r"config\.json"):
        models.load(models.resolve(str(tmp_path)), shared_cache)


def test_tiny_models_are_deterministic(shared_cache):
    a = models.load(models.REGISTRY["tiny-pythia"], shared_cache)
    b = models.load(models.REGISTRY["tiny-pythia"], shared_cache)
    wa = next(a.hf_model.parameters())
    wb = next(b.hf_model.parameters())
    assert (wa == wb).all()
