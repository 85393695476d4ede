import numpy as np
import pytest

from harness import extraction
from harness.config import ExtractionSettings
from harness.progress import silent

TEXTS = [
    "Inflation erodes the value of savings when wages fail to keep pace.",
    "The orchestra tuned for a long minute before the overture began.",
    "音楽は時間の中で形を持つ芸術です。",
    "Short sentence here.",
    "A compiler translates source code into machine instructions step by step.",
]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-pythia"])
def test_shapes_and_metadata(tiny_models, name):
    acts = extraction.extract(tiny_models[name], TEXTS, ExtractionSettings(), progress=silent)
    assert acts.resid.shape == (2, len(TEXTS), 64)
    assert acts.resid.dtype == np.float32
    assert np.isfinite(acts.resid).all()
    assert acts.meta["n_layers"] == 2 and acts.meta["d_model"] == 64
    assert acts.meta["tokens"] == "seed" and acts.meta["processing"] == "tl-compat"
    assert acts.n_tokens.shape == (len(TEXTS),)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-pythia"])
@pytest.mark.parametrize("tokens", ["seed", "last", "mean"])
@pytest.mark.parametrize("processing", ["tl-compat", "raw"])
def test_batched_equals_one_at_a_time(tiny_models, name, tokens, processing):
    lm = tiny_models[name]
    batched = extraction.extract(
        lm, TEXTS, ExtractionSettings(tokens, processing, batch_size=4), progress=silent
    )
    single = extraction.extract(
        lm, TEXTS, ExtractionSettings(tokens, processing, batch_size=1), progress=silent
    )
    np.testing.assert_allclose(batched.resid, single.resid, atol=1e-4, rtol=0)
    # Different sentences must give different rows, or the comparison above proves nothing.
    assert np.abs(batched.resid[:, 0] - batched.resid[:, 1]).max() > 1e-3


def test_seed_mode_reads_the_last_token_before_the_last_word(tiny_models):
    tokenizer = tiny_models["tiny-gpt2"].tokenizer
    plan = extraction.plan_tokens(tokenizer, "The cat sat on the mat.", "seed")
    expected = tokenizer("The cat sat on the", add_special_tokens=False)["input_ids"]
    assert plan.ids == (extraction.bos_id(tokenizer), *expected)
    assert plan.positions == (len(plan.ids) - 1,)
    assert tokenizer.decode([plan.ids[-1]]).strip() == "the"


def test_seed_mode_keeps_text_without_spaces_whole(tiny_models):
    tokenizer = tiny_models["tiny-gpt2"].tokenizer
    text = "音楽は時間の中で形を持つ芸術です。"
    assert extraction.seed_prefix(text) == text
    plan = extraction.plan_tokens(tokenizer, text, "seed")
    assert plan.ids[1:] == tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_last_and_mean_modes(tiny_models):
    tokenizer = tiny_models["tiny-gpt2"].tokenizer
    last = extraction.plan_tokens(tokenizer, "One two three", "last")
    mean = extraction.plan_tokens(tokenizer, "One two three", "mean")
    assert last.ids == mean.ids and last.positions == (len(last.ids) - 1,)
    assert mean.positions == tuple(range(1, len(mean.ids)))  # BOS left out


def test_raw_resid_post_matches_hugging_face_hidden_states(tiny_models):
    import torch

    lm = tiny_models["tiny-gpt2"]
    settings = ExtractionSettings("last", "raw", batch_size=1)
    acts = extraction.extract(lm, TEXTS[:1], settings, progress=silent)
    plan = extraction.plan_tokens(lm.tokenizer, TEXTS[0], "last")
    with torch.inference_mode():
        hidden = lm.hf_model(torch.tensor([plan.ids]), output_hidden_states=True).hidden_states
    # hidden_states[l + 1] is block l's output; the last one has the final norm applied.
    np.testing.assert_allclose(acts.resid[0, 0], hidden[1][0, -1].numpy(), atol=1e-4)


def test_non_finite_activations_name_the_layer():
    resid = np.zeros((3, 2, 4), dtype=np.float32)
    resid[1, 0, 2] = np.nan
    with pytest.raises(extraction.ExtractionError, match="layer 1"):
        extraction._check_finite(resid, "m")


def test_a_model_booted_with_one_processing_refuses_another(tiny_models):
    """Booting wraps and processes the Hugging Face model in place: a later boot with other
    processing would silently get the first one's (0.003 off on tiny-gpt2)."""
    lm = tiny_models["tiny-gpt2"]
    compat = extraction.extract(lm, TEXTS[:2], ExtractionSettings(), progress=silent)
    again = extraction.extract(lm, TEXTS[:2], ExtractionSettings(), progress=silent)
    np.testing.assert_allclose(again.resid, compat.resid, atol=1e-6, rtol=0)
    with pytest.raises(extraction.ExtractionError, match="load it again"):
        extraction.extract(lm, TEXTS[:2], ExtractionSettings(processing="raw"), progress=silent)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-pythia"])
def test_a_sentence_longer_than_the_context_is_named_before_the_forward_pass(tiny_models, name):
    # Issue 21 item 5: torch's "IndexError: index out of range in self" and 474 lines.
    lm = tiny_models[name]
    limit = lm.hf_model.config.max_position_embeddings
    long = "word " * (limit + 50) + "end."
    with pytest.raises(extraction.ExtractionError) as caught:
        extraction.extract(lm, [TEXTS[0], long], ExtractionSettings(), progress=silent)
    message = str(caught.value)
    assert f"longer than {name!r}'s context of {limit} tokens" in message
    assert "sentence 1 (" in message and "'word word" in message
