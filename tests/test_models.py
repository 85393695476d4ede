import pytest

from harness import models
from tests.conftest import tiny_config


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


# ------------------------------- folders that are not what the claims assume (issue 21, 6)


def _saved(folder, model, tokenizer):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_an_encoder_folder_is_refused_not_judged_as_a_causal_lm(tmp_path, shared_cache):
    # It used to load through AutoModelForCausalLM's BertLMHeadModel fallback, with no word.
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = models.local_tokenizer(shared_cache)
    model = BertForMaskedLM(tiny_config(BertConfig, tokenizer))
    folder = _saved(tmp_path / "bert", model, tokenizer)
    with pytest.raises(models.ModelError, match="is a BertForMaskedLM, not a causal language"):
        models.load(models.resolve(str(folder)), shared_cache)


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weights_are_one_clear_error(tmp_path, shared_cache, weights):
    # Random bytes gave a raw SafetensorError, or a 380-line UnpicklingError that advised
    # weights_only=False (arbitrary code execution).
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = models.local_tokenizer(shared_cache)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)
    folder = _saved(tmp_path / "gpt", GPT2LMHeadModel(config), tokenizer)
    (folder / "model.safetensors").unlink()
    (folder / weights).write_bytes(bytes(range(256)) * 16)
    with pytest.raises(models.ModelUnavailableError) as caught:
        models.load(models.resolve(str(folder)), shared_cache)
    message = str(caught.value)
    assert message.startswith(f"cannot read the weights in the folder '{folder}'")
    assert "weights_only" not in message and len(message.splitlines()) == 1


def test_an_empty_folder_says_it_is_empty(tmp_path, shared_cache):
    with pytest.raises(models.ModelUnavailableError) as caught:
        models.load(models.resolve(str(tmp_path)), shared_cache)
    message = str(caught.value)
    assert "has no config.json" in message and "it is empty" in message
    assert "sentencepiece" not in message and message.count("config.json") == 2
