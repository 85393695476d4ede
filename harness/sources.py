"""Facts about the claims' sources that several claims share: which models each measured."""

from __future__ import annotations

# "Beyond Gaussian: Language Model Representations and Distributions": its distributional
# analysis covered these six models (registry names as Hugging Face ids' last component).
BEYOND_GAUSSIAN_MODELS = (
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "pythia-160m",
    "pythia-410m",
    "pythia-1b",
)
# Its subject/attribute distinctiveness analysis "was limited to the GPT2-Small model".
BEYOND_GAUSSIAN_SIMILARITY_MODELS = ("gpt2",)
