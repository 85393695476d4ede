"""Residual-stream extraction: the only module that touches TransformerLens.

One forward pass per batch; hooks on every block's output (``blocks.{l}.hook_resid_post``)
keep only the selected token(s) of each sentence, so memory grows with sentences x layers
x d_model, never with sequence length.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.config import ExtractionSettings
from harness.models import LoadedModel
from harness.progress import ProgressFactory, tqdm_bar

HOOK_TEMPLATE = "blocks.{layer}.hook_resid_post"


class _Done(Exception):
    """Raised from the last layer's hook to end a forward pass early."""


class ExtractionError(RuntimeError):
    """Extraction that cannot give trustworthy activations; the message says where."""


@dataclass(frozen=True)
class TokenPlan:
    """The token ids fed to the model for one sentence and the positions read back."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]


@dataclass(frozen=True)
class ActivationSet:
    resid: np.ndarray  # (n_layers, n_sentences, d_model) float32, in dataset order
    n_tokens: np.ndarray  # (n_sentences,) tokens fed per sentence, BOS included
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.resid.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.resid.shape[2])


def bos_id(tokenizer: Any) -> int:
    # TransformerLens prepends the tokenizer's BOS, or EOS where a tokenizer has none.
    token = tokenizer.bos_token_id
    if token is None:
        token = tokenizer.eos_token_id
    if token is None:
        raise ExtractionError("the tokenizer has neither a BOS nor an EOS token to prepend")
    return int(token)


def seed_prefix(text: str) -> str:
    """The study's prompt: the sentence minus its last word (cut at the last space).

    Text without spaces (Japanese) stays whole, a known confound of the Japanese claim.
    """
    cut = text.rfind(" ")
    return text[:cut] if cut > 0 else text


def plan_tokens(tokenizer: Any, text: str, mode: str) -> TokenPlan:
    prompt = seed_prefix(text) if mode == "seed" else text
    body = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = (bos_id(tokenizer), *body)
    if len(ids) < 2:
        raise ExtractionError(f"sentence tokenizes to nothing: {text!r}")
    if mode == "mean":
        # BOS is left out: it is the same token in every sentence and its residual is an
        # attention sink whose norm would dominate the mean.
        return TokenPlan(ids, tuple(range(1, len(ids))))
    return TokenPlan(ids, (len(ids) - 1,))


def boot(loaded: LoadedModel, settings: ExtractionSettings) -> Any:
    """Hand a loaded Hugging Face model to TransformerLens' bridge, processed as asked."""
    from transformer_lens.model_bridge import TransformerBridge

    name = loaded.spec.hf_id or loaded.spec.name
    try:
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=loaded.hf_model, tokenizer=loaded.tokenizer, device=settings.device
        )
    except Exception as exc:  # the bridge raises many kinds for unsupported architectures
        arch = getattr(loaded.hf_model.config, "architectures", None)
        raise ExtractionError(
            f"TransformerLens cannot boot {loaded.spec.name!r} (architecture {arch}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if settings.processing == "tl-compat":
        bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge


def _hook_names(bridge: Any, n_layers: int) -> list[str]:
    names = [HOOK_TEMPLATE.format(layer=layer) for layer in range(n_layers)]
    if names[0] in bridge.hook_dict:
        return names
    # Without compatibility mode the legacy aliases are absent; the block output is the
    # same tensor under its bridge name.
    return [f"blocks.{layer}.hook_out" for layer in range(n_layers)]


def extract(
    loaded: LoadedModel,
    texts: Sequence[str],
    settings: ExtractionSettings,
    progress: ProgressFactory = tqdm_bar,
    bridge: Any = None,
) -> ActivationSet:
    import torch

    started = time.perf_counter()
    bridge = boot(loaded, settings) if bridge is None else bridge
    booted = time.perf_counter()
    n_layers = int(bridge.cfg.n_layers)
    d_model = int(bridge.cfg.d_model)
    plans = [plan_tokens(loaded.tokenizer, text, settings.tokens) for text in texts]
    out = np.empty((n_layers, len(plans), d_model), dtype=np.float32)
    # Sorting by length keeps padding small; results go back to dataset order by index.
    order = sorted(range(len(plans)), key=lambda i: len(plans[i].ids))
    names = _hook_names(bridge, n_layers)
    batches = [
        order[start : start + settings.batch_size]
        for start in range(0, len(order), settings.batch_size)
    ]
    with progress(len(plans), f"extract {loaded.spec.name}", "sent") as bar, torch.inference_mode():
        for batch in batches:
            _run_batch(bridge, [plans[i] for i in batch], batch, names, out, settings.device)
            bar.update(len(batch))
    _check_finite(out, loaded.spec.name)
    n_tokens = np.array([len(p.ids) for p in plans], dtype=np.int64)
    meta = {
        "model": loaded.spec.name,
        "hf_id": loaded.spec.hf_id,
        "model_identity": loaded.identity,
        "n_layers": n_layers,
        "d_model": d_model,
        "hook": HOOK_TEMPLATE,
        "tokens": settings.tokens,
        "processing": settings.processing,
        "dtype": "float32",
        "n_sentences": len(plans),
        "n_tokens_total": int(n_tokens.sum()),
        "seconds_boot": round(booted - started, 3),
        "seconds_forward": round(time.perf_counter() - booted, 3),
        "library_versions": library_versions(),
    }
    return ActivationSet(out, n_tokens, meta)


def _run_batch(
    bridge: Any,
    plans: list[TokenPlan],
    rows: list[int],
    names: list[str],
    out: np.ndarray,
    device: str,
) -> None:
    import torch

    width = max(len(p.ids) for p in plans)
    # Right padding: with causal attention no real token sees a pad, and position ids
    # stay 0..n-1, so the selected positions are exact without an attention mask.
    pad = plans[0].ids[0]
    tokens = torch.full((len(plans), width), pad, dtype=torch.long)
    weights = torch.zeros((len(plans), width), dtype=torch.float32)
    for row, plan in enumerate(plans):
        tokens[row, : len(plan.ids)] = torch.tensor(plan.ids)
        weights[row, list(plan.positions)] = 1.0 / len(plan.positions)
    tokens = tokens.to(device)
    weights = weights.to(device)
    index = torch.tensor(rows)

    last = len(names) - 1

    def grab(layer: int) -> Any:
        def hook(resid: Any, hook: Any) -> Any:
            selected = torch.einsum("bp,bpd->bd", weights, resid.float())
            out[layer, index.numpy()] = selected.cpu().numpy()
            if layer == last:
                # Nothing after the last block is needed; the final norm and the unembedding
                # (half the compute for Gemma's 262k vocabulary) are skipped.
                raise _Done
            return resid

        return hook

    hooks = [(name, grab(layer)) for layer, name in enumerate(names)]
    with contextlib.suppress(_Done):
        bridge.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)


def _check_finite(resid: np.ndarray, model: str) -> None:
    bad = ~np.isfinite(resid)
    if bad.any():
        per_layer = bad.reshape(resid.shape[0], -1).sum(axis=1)
        first = int(np.flatnonzero(per_layer)[0])
        raise ExtractionError(
            f"{model}: {int(per_layer.sum())} NaN/inf activation values, first at layer "
            f"{first} ({int(per_layer[first])} there); try --lm-processing raw or float32"
        )


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "transformer-lens", "transformers", "gguf", "numpy", "scipy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def accelerators() -> list[str]:
    """The accelerators torch can see on this machine (empty on a CPU-only one)."""
    import torch

    found = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found
