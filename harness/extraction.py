"""Residual-stream extraction: the only module that touches TransformerLens.

One forward pass per batch; hooks on every block's output (``blocks.{l}.hook_resid_post``)
keep only the selected token(s) of each sentence, so memory grows with sentences x layers
x d_model, never with sequence length.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import reservoir
from harness.config import ExtractionSettings
from harness.environment import cpu_share, library_versions
from harness.models import LoadedModel, is_out_of_memory
from harness.progress import ProgressFactory, tqdm_bar

HOOK_TEMPLATE = "blocks.{layer}.hook_resid_post"

# (n_layers, n_sentences, d_model) -> the float32 array extraction fills; a cache can hand
# out a memory-mapped file here so that RAM does not grow with the number of sentences.
Allocate = Callable[[tuple[int, int, int]], np.ndarray]


def _in_memory(shape: tuple[int, int, int]) -> np.ndarray:
    return np.empty(shape, dtype=np.float32)


# Hugging Face model -> the processing it was booted with (weak: models are freed as usual).
_BOOTED: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


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
    # Token selection "all": axis 1 holds one reservoir-sampled token per row, not one
    # sentence; row i is token ``positions[i]`` of input sentence ``source_rows[i]`` (and
    # ``n_tokens[i]`` is that sentence's count). None for one row per sentence.
    source_rows: np.ndarray | None = None
    positions: np.ndarray | None = None

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
    if mode in ("mean", "all"):
        # BOS is left out: it is the same token in every sentence and its residual is an
        # attention sink whose norm would dominate the mean (and, for "all", would be one
        # identical outlier vector per sentence among the sampled tokens).
        return TokenPlan(ids, tuple(range(1, len(ids))))
    return TokenPlan(ids, (len(ids) - 1,))


def boot(loaded: LoadedModel, settings: ExtractionSettings) -> Any:
    """Hand a loaded Hugging Face model to TransformerLens' bridge, processed as asked."""
    from transformer_lens.model_bridge import TransformerBridge

    name = loaded.spec.hf_id or loaded.spec.name
    check_device(settings.device)
    # The bridge wraps the Hugging Face modules in place, and compatibility mode's
    # processing stays with them: a "raw" boot after a "tl-compat" one gave processed
    # activations (0.003 off). Same processing again is allowed (float noise, ~1e-8).
    earlier = _BOOTED.get(loaded.hf_model)
    if earlier is not None and earlier != settings.processing:
        raise ExtractionError(
            f"{loaded.spec.name!r} was booted with processing {earlier!r} already, which "
            f"changed the model in place; load it again (harness.models.load) to use "
            f"processing {settings.processing!r}"
        )
    try:
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=loaded.hf_model, tokenizer=loaded.tokenizer, device=settings.device
        )
    except Exception as exc:  # the bridge raises many kinds for unsupported architectures
        if is_out_of_memory(exc):  # moving the weights to the device: not the architecture
            raise ExtractionError(out_of_memory_advice(loaded.spec.name, "boot", settings)) from exc
        arch = getattr(loaded.hf_model.config, "architectures", None)
        why = str(exc)
        # The bridge's message for an unknown architecture lists every supported one
        # (hundreds of names): the head says what went wrong, the rest is in the cause.
        why = why if len(why) <= 300 else why[:300] + " ..."
        raise ExtractionError(
            f"TransformerLens cannot boot {loaded.spec.name!r} (architecture {arch}): "
            f"{type(exc).__name__}: {why}"
        ) from exc
    if settings.processing == "tl-compat":
        bridge.enable_compatibility_mode(disable_warnings=True)
    _BOOTED[loaded.hf_model] = settings.processing
    return bridge


def context_length(loaded: LoadedModel, bridge: Any) -> int | None:
    """The most tokens the model's position embeddings cover (None when it says nothing)."""
    for value in (
        getattr(loaded.hf_model.config, "max_position_embeddings", None),
        getattr(getattr(bridge, "cfg", None), "n_ctx", None),
    ):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_context(
    loaded: LoadedModel, bridge: Any, texts: Sequence[str], plans: Sequence[TokenPlan]
) -> None:
    """Before the forward pass: a sentence longer than the model's context would fail deep
    inside torch ("index out of range in self", hundreds of lines) or be read wrongly."""
    limit = context_length(loaded, bridge)
    if limit is None:
        return
    long = [i for i, plan in enumerate(plans) if len(plan.ids) > limit]
    if long:
        first = long[0]
        text = texts[first] if len(texts[first]) <= 80 else texts[first][:77] + "..."
        raise ExtractionError(
            f"{len(long)} sentence(s) are longer than {loaded.spec.name!r}'s context of "
            f"{limit} tokens; the first is sentence {first} ({len(plans[first].ids)} tokens "
            f"with BOS): {text!r}. Shorten or split it, or drop it from the dataset"
        )


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
    allocate: Allocate = _in_memory,
    pairs: Sequence[Hashable] | None = None,
    after_batch: Callable[[], None] | None = None,
) -> ActivationSet:
    """``pairs``: each text's (subject, attribute) pair, for token selection "all", which
    keeps a reservoir of ``settings.reservoir`` tokens per pair (None: one pair).
    ``allocate``: makes the output array (a cache hands out a file-backed one);
    ``after_batch``: called after each batch's rows are written (the cache drops their
    pages from RAM there)."""
    import torch

    started = time.perf_counter()
    bridge = boot(loaded, settings) if bridge is None else bridge
    booted = time.perf_counter()
    n_layers = int(bridge.cfg.n_layers)
    d_model = int(bridge.cfg.d_model)
    plans = [plan_tokens(loaded.tokenizer, text, settings.tokens) for text in texts]
    _check_context(loaded, bridge, texts, plans)
    # Token selection "all": one output row per reservoir slot, never one per token.
    sample = None
    if settings.tokens == "all":
        sample = _TokenSample.plan(plans, pairs, settings.reservoir)
    out = allocate((n_layers, len(plans) if sample is None else sample.reservoir.total, d_model))
    # Non-finite values counted per layer as batches arrive: no second pass over `out`.
    bad = np.zeros(n_layers, dtype=np.int64)
    # Sorting by length keeps padding small; results go back to dataset order by index.
    order = sorted(range(len(plans)), key=lambda i: len(plans[i].ids))
    names = _hook_names(bridge, n_layers)
    batches = [
        order[start : start + settings.batch_size]
        for start in range(0, len(order), settings.batch_size)
    ]
    threads = torch.get_num_threads()
    # No oversubscription under xdist. On a machine busy with other work, fewer threads
    # than cores is faster: OpenMP threads waiting for a core stall every small op.
    torch.set_num_threads(settings.threads or min(threads, cpu_share()))
    try:
        with (
            progress(len(plans), f"extract {loaded.spec.name}", "sent") as bar,
            torch.inference_mode(),
        ):
            for batch in batches:
                rows = [plans[i] for i in batch]
                if sample is not None:
                    _run_sampled(bridge, plans, batch, sample, names, out, bad, settings.device)
                else:
                    _run_batch(bridge, rows, batch, names, out, bad, settings.device)
                if after_batch is not None:
                    after_batch()
                bar.update(len(batch))
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        if settings.device.startswith("cuda"):
            torch.cuda.empty_cache()  # the next model in this run gets the memory back
        raise ExtractionError(out_of_memory_advice(loaded.spec.name, "forward", settings)) from exc
    finally:
        torch.set_num_threads(threads)
    _check_finite(bad, loaded.spec.name, settings.dtype)
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
        "dtype": "float32",  # of the stored activations
        "weights_dtype": settings.dtype,
        "device": settings.device,
        "n_sentences": len(plans),
        "n_tokens_total": int(n_tokens.sum()),
        "seconds_boot": round(booted - started, 3),
        "seconds_forward": round(time.perf_counter() - booted, 3),
        "library_versions": library_versions(),
    }
    if sample is not None:
        return sample.activation_set(out, n_tokens, meta)
    return ActivationSet(out, n_tokens, meta)


def out_of_memory_advice(model: str, stage: str, settings: ExtractionSettings) -> str:
    """What to try when ``model`` ran out of memory (stage: "boot" or "forward")."""
    where = "moving the weights of" if stage == "boot" else "the forward pass of"
    tries = []
    if stage == "forward" and settings.batch_size > 1:
        tries.append(f"--lm-batch-size {settings.batch_size // 2}")
    if settings.device != "cpu":
        tries.append("--lm-device cpu (slower, but system memory is usually larger)")
    else:
        tries.append("--lm-device cuda (or mps) where a GPU with enough memory is present")
    if settings.dtype == "float32":
        tries.append("--lm-dtype bfloat16 (half the memory)")
    return (
        f"out of memory in {where} {model!r} on {settings.device} (batch size "
        f"{settings.batch_size}, weights {settings.dtype}); try {', or '.join(tries)}"
    )


def _run_batch(
    bridge: Any,
    plans: list[TokenPlan],
    rows: list[int],
    names: list[str],
    out: np.ndarray,
    bad: np.ndarray,
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
    # Sorted rows make the scatter into a memory-mapped `out` touch pages in order.
    index = np.asarray(rows)

    _forward(
        bridge,
        tokens,
        names,
        lambda resid: torch.einsum("bp,bpd->bd", weights, resid.float()),
        out,
        index,
        bad,
    )


def _forward(
    bridge: Any,
    tokens: Any,
    names: list[str],
    select: Callable[[Any], Any],
    out: np.ndarray,
    rows: np.ndarray,
    bad: np.ndarray,
) -> None:
    """One forward pass: at each block's output, ``select(resid)`` (one vector per output
    row, in float32) is written to ``out[layer, rows]`` and its non-finite values counted."""
    last = len(names) - 1

    def grab(layer: int) -> Any:
        def hook(resid: Any, hook: Any) -> Any:
            # Half-precision weights: the selection is made in float32, and the statistics
            # later read float32 values on the CPU, whatever the model ran in.
            selected = select(resid).float().cpu().numpy()
            bad[layer] += int(np.count_nonzero(~np.isfinite(selected)))
            out[layer, rows] = selected
            if layer == last:
                # Nothing after the last block is needed; the final norm and the unembedding
                # (half the compute for Gemma's 262k vocabulary) are skipped.
                raise _Done
            return resid

        return hook

    hooks = [(name, grab(layer)) for layer, name in enumerate(names)]
    with contextlib.suppress(_Done):
        bridge.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)


@dataclass
class _TokenSample:
    """Token selection "all": the reservoir and, per output row, where its token came from."""

    reservoir: Any  # harness.reservoir.Reservoir
    pair_of: np.ndarray  # (n_sentences,) pair index of each sentence
    source_rows: np.ndarray  # (slots,) sentence of the token in each output row
    positions: np.ndarray  # (slots,) that token's position (BOS = 0)
    size: int

    @classmethod
    def plan(
        cls, plans: list[TokenPlan], pairs: Sequence[Hashable] | None, size: int
    ) -> _TokenSample:
        labels = [None] * len(plans) if pairs is None else list(pairs)
        if len(labels) != len(plans):
            raise ValueError(f"{len(labels)} pair labels for {len(plans)} texts")
        index: dict[Hashable, int] = {}
        pair_of = np.array([index.setdefault(label, len(index)) for label in labels], np.int64)
        counts = np.bincount(
            pair_of, weights=[len(p.positions) for p in plans], minlength=len(index)
        ).astype(np.int64)
        # Capacities from the plans alone, before any forward pass: the array's shape.
        sampler = reservoir.Reservoir(reservoir.capacities(counts, size))
        slots = sampler.total
        missing = np.full(slots, -1, dtype=np.int64)
        return cls(sampler, pair_of, missing, missing.copy(), size)

    def activation_set(
        self, out: np.ndarray, n_tokens: np.ndarray, meta: dict[str, Any]
    ) -> ActivationSet:
        # Every slot is filled: a pair has at least as many candidates as slots.
        assert (self.source_rows >= 0).all()
        meta = {**meta, "reservoir": self.size, "n_source_sentences": len(n_tokens)}
        rows = self.source_rows.copy()
        return ActivationSet(out, n_tokens[rows], meta, rows, self.positions.copy())


def _run_sampled(
    bridge: Any,
    plans: list[TokenPlan],
    batch: list[int],
    sample: _TokenSample,
    names: list[str],
    out: np.ndarray,
    bad: np.ndarray,
    device: str,
) -> None:
    """One batch of token selection "all": every token after BOS is a candidate, in batch
    order; the reservoir decides which output row each kept one overwrites before the
    forward pass (decisions depend on counts only), and each layer's hook writes just
    those vectors, so a kept token holds its own vectors at every layer."""
    import torch

    sentence = np.repeat(np.asarray(batch, np.int64), [len(plans[i].positions) for i in batch])
    position = np.concatenate([np.asarray(plans[i].positions, np.int64) for i in batch])
    chosen, rows = sample.reservoir.assign(sample.pair_of[sentence])
    if len(chosen) == 0:
        return  # nothing of this batch is kept: no forward pass
    sentence, position = sentence[chosen], position[chosen]
    sample.source_rows[rows] = sentence
    sample.positions[rows] = position
    # Only sentences with a kept token are run; ascending rows touch a memory map in order.
    order = np.argsort(rows)
    rows, sentence, position = rows[order], sentence[order], position[order]
    needed, local = np.unique(sentence, return_inverse=True)
    width = max(len(plans[i].ids) for i in needed)
    pad = plans[int(needed[0])].ids[0]  # right padding, as in _run_batch
    tokens = torch.full((len(needed), width), pad, dtype=torch.long)
    for row, i in enumerate(needed):
        tokens[row, : len(plans[i].ids)] = torch.tensor(plans[i].ids)
    tokens = tokens.to(device)
    batch_index = torch.as_tensor(local, device=device)
    token_index = torch.as_tensor(position, device=device)
    _forward(bridge, tokens, names, lambda resid: resid[batch_index, token_index], out, rows, bad)


def _check_finite(counts: np.ndarray, model: str, dtype: str = "float32") -> None:
    """Refuse activations with NaN/inf (a half-precision overflow, typically) by layer.

    ``counts``: non-finite values per layer, or the (layers, sentences, d_model) array.
    """
    per_layer = counts if counts.ndim == 1 else (~np.isfinite(counts)).sum(axis=(1, 2))
    if per_layer.any():
        first = int(np.flatnonzero(per_layer)[0])
        advice = (
            f"the weights ran in {dtype}, whose range is too small for this model's "
            "residual stream: use --lm-dtype float32, or bfloat16 (float32's range)"
            if dtype != "float32"
            else "try --lm-processing raw"
        )
        raise ExtractionError(
            f"{model}: {int(per_layer.sum())} NaN/inf activation values, first at layer "
            f"{first} ({int(per_layer[first])} there); {advice}"
        )


def check_device(device: str) -> None:
    """A clear error for a device this machine does not have, before any model is moved."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ExtractionError(
            f"--lm-device {device}: torch {torch.__version__} sees no CUDA device here "
            "(a CPU-only build, or no GPU); use --lm-device cpu"
        )
    index = device.partition(":")[2]
    if (
        kind == "cuda"
        and index
        and (not index.isdigit() or int(index) >= torch.cuda.device_count())
    ):
        raise ExtractionError(
            f"--lm-device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
        )
    mps = getattr(torch.backends, "mps", None)
    if kind == "mps" and (mps is None or not mps.is_available()):
        raise ExtractionError(f"--lm-device {device}: MPS (Apple GPU) is not available here")
