"""Activation sets on disk: the documented format (docs/activation-format.md).

A set is a directory: ``sentences.jsonl`` (one row per sentence, in array order),
``resid_post.npy`` or ``resid_post.safetensors`` (float16/float32, shape
``(n_layers, n_sentences, d_model)``, memory-mapped on read), optional ``n_tokens.npy``, and
``meta.json``, written last, so a directory without it is an unfinished write. The cache's
activation entries are written by this module, so a cache entry is an activation set.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors import SafetensorError, safe_open

from harness import dataset as dataset_module
from harness.dataset import Dataset, DatasetError
from harness.extraction import ActivationSet

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "meta.json"
SENTENCES = "sentences.jsonl"
ARRAY_NPY = "resid_post.npy"
ARRAY_SAFETENSORS = "resid_post.safetensors"
SAFETENSORS_KEY = "resid_post"
TOKENS = "n_tokens.npy"
DTYPES = ("float16", "float32")
# Fields a set must carry; the rest of the documented ones are filled on read when absent,
# so sets (and cache entries) written before a field existed stay readable.
REQUIRED_META = ("format_version", "model", "n_layers", "d_model")
# Bookkeeping of the file itself, not a property of the activations.
FILE_FIELDS = ("format_version", "checksums")


class ActivationSetError(ValueError):
    """An activation set that cannot be used; the message names the set and the problem."""


@dataclass(frozen=True)
class StoredSet:
    """An activation set read from disk, validated."""

    path: Path
    activations: ActivationSet
    dataset: Dataset
    checksums: dict[str, str]

    @property
    def model(self) -> str:
        return str(self.activations.meta["model"])

    @property
    def content_hash(self) -> str:
        """Hash of the array and sentence files: names derived tables computed from the set."""
        payload = json.dumps(
            {k: v for k, v in sorted(self.checksums.items()) if k != TOKENS}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def extraction_fields(self) -> dict[str, Any]:
        """The set's own extraction settings, in the form of ``ExtractionSettings.key_fields``:
        what a baseline of the set's model must have been made under."""
        meta = self.activations.meta
        fields = {"tokens": meta.get("tokens"), "processing": meta.get("processing")}
        weights = meta.get("weights_dtype")
        if weights not in (None, "float32"):
            fields["dtype"] = weights
        if meta.get("tokens") == "all" and meta.get("reservoir") is not None:
            fields["reservoir"] = meta["reservoir"]
        return fields


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_sha256(sentences: pd.DataFrame) -> str:
    """The hash a ``Dataset`` of these rows has: ties a set to the dataset it was made from."""
    frame = sentences.reset_index(drop=True)
    if "id" not in frame:
        frame = frame.assign(id=[f"row{i}" for i in range(len(frame))])
    return Dataset(frame, "").sha256


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- writing


def token_rows(
    sentences: pd.DataFrame, source_rows: np.ndarray, positions: np.ndarray
) -> pd.DataFrame:
    """The row table of a token-selection "all" set: per sampled token, its sentence's
    fields, ``token_position`` and the id ``<sentence id>@<position>``."""
    frame = sentences.reset_index(drop=True)
    if "id" not in frame:
        frame = frame.assign(id=[f"row{i}" for i in range(len(frame))])
    table = frame.iloc[np.asarray(source_rows, dtype=np.int64)].reset_index(drop=True)
    positions = np.asarray(positions, dtype=np.int64)
    ids = [f"{i}@{p}" for i, p in zip(table["id"], positions, strict=True)]
    return table.assign(id=ids, token_position=positions)


def write_files(
    folder: Path, acts: ActivationSet, sentences: pd.DataFrame, in_place: bool = False
) -> dict[str, Any]:
    """Write the array, token counts and sentence table into ``folder``; return the meta
    to pass to :func:`write_manifest` (the caller may add fields first).

    For an extraction with token selection "all" (``acts.source_rows`` set) ``sentences``
    may be the extracted sentences; their per-token rows are written. ``in_place``: the
    array was filled straight into ``folder``'s array file (``acts.resid`` maps it)."""
    table = sentences.reset_index(drop=True)
    if acts.source_rows is not None and "token_position" not in table:
        assert acts.positions is not None  # set together with source_rows
        table = token_rows(table, acts.source_rows, acts.positions)
    resid = np.asarray(acts.resid)
    if resid.dtype.name not in DTYPES:
        resid = resid.astype(np.float32)
    if resid.ndim != 3 or resid.shape[1] != len(table):
        raise ActivationSetError(
            f"array of shape {resid.shape} does not fit {len(table)} sentences; expected "
            "(n_layers, n_sentences, d_model)"
        )
    if not (in_place and (folder / ARRAY_NPY).is_file()):
        np.save(folder / ARRAY_NPY, resid)
    n_tokens = np.asarray(acts.n_tokens)
    np.save(folder / TOKENS, n_tokens)
    columns = [c for c in ("id", "subject", "attribute", "text", "token_position") if c in table]
    table = table[columns]
    if np.issubdtype(n_tokens.dtype, np.integer):
        table = table.assign(n_tokens=n_tokens)
    table.to_json(folder / SENTENCES, orient="records", lines=True, force_ascii=False)
    meta = dict(acts.meta)
    meta.setdefault("model", "unnamed")
    meta.update(
        n_layers=int(resid.shape[0]),
        d_model=int(resid.shape[2]),
        n_sentences=int(resid.shape[1]),
        dtype=resid.dtype.name,
    )
    meta.setdefault("hook", None)
    meta.setdefault("tokens", None)
    meta.setdefault("processing", None)
    meta.setdefault("dataset_sha256", dataset_sha256(table))
    meta.setdefault("created", now_utc())
    return meta


def write_manifest(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``meta.json`` with the format version and every other file's checksum.

    It must be the last file written: readers take a directory without it as absent.
    """
    manifest = {k: v for k, v in meta.items() if k not in FILE_FIELDS}
    manifest["format_version"] = FORMAT_VERSION
    manifest["checksums"] = {
        p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


def write(folder: Path, acts: ActivationSet, sentences: pd.DataFrame | Dataset) -> Path:
    """Write an activation set to a new (or empty) directory ``folder``."""
    folder = Path(folder)
    frame = sentences.frame if isinstance(sentences, Dataset) else sentences
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ActivationSetError(f"{folder}: not empty; write an activation set to a new folder")
    write_manifest(folder, write_files(folder, acts, frame))
    return folder


# ----------------------------------------------------------------------------- reading


def read(folder: Path | str, *, verify: bool = True, check_values: bool = True) -> StoredSet:
    """Read and validate an activation set; the array stays memory-mapped.

    ``verify``: recompute the file checksums (and compare them with ``meta.json``'s);
    ``check_values``: refuse NaN/inf values. The cache turns both off after its own
    checksum pass, since its entries were checked when written.
    """
    folder = Path(folder).expanduser()
    name = f"activation set {folder}"
    if not folder.is_dir():
        raise ActivationSetError(f"{name}: no such directory")
    meta = _read_meta(folder, name)
    array_path = _array_path(folder, name)
    if not (folder / SENTENCES).is_file():
        raise ActivationSetError(f"{name}: missing {SENTENCES} (one row per sentence)")
    checksums = _checksums(folder, meta, name, verify)
    resid = _load_array(array_path, name)
    sentences, token_column = _read_sentences(folder / SENTENCES, name)
    _check_shape(resid, meta, len(sentences), array_path.name, name)
    if check_values:
        check_finite(resid, name)
    n_tokens = _n_tokens(folder, token_column, len(sentences), name)
    meta = fill_meta(meta, folder, resid, sentences)
    positions = (
        sentences["token_position"].to_numpy(np.int64) if "token_position" in sentences else None
    )
    meta = {k: v for k, v in meta.items() if k not in FILE_FIELDS}
    acts = ActivationSet(resid, n_tokens, meta, positions=positions)
    return StoredSet(folder, acts, Dataset(sentences, str(folder / SENTENCES)), checksums)


def peek_model(folder: Path | str) -> str | None:
    """The model name in a set's meta.json, or None where it cannot be read (no checks)."""
    try:
        return str(json.loads((Path(folder).expanduser() / MANIFEST).read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_many(folders: list[Path | str]) -> dict[str, StoredSet]:
    """Several sets by model name; two sets of one model name are an error."""
    out: dict[str, StoredSet] = {}
    for folder in folders:
        stored = read(folder)
        if stored.model in out:
            raise ActivationSetError(
                f"activation sets {out[stored.model].path} and {stored.path} both name model "
                f"{stored.model!r} in meta.json; the report needs one name per set"
            )
        out[stored.model] = stored
    return out


def fill_meta(
    meta: dict[str, Any], folder: Path, resid: np.ndarray, sentences: pd.DataFrame
) -> dict[str, Any]:
    """The documented fields, computed where a set (or an older cache entry) lacks them."""
    out = dict(meta)
    out.setdefault("n_sentences", int(resid.shape[1]))
    out.setdefault("dtype", resid.dtype.name)
    out.setdefault("hook", None)
    out.setdefault("tokens", None)
    out.setdefault("processing", None)
    out.setdefault("library_versions", {})
    if "dataset_sha256" not in out:
        out["dataset_sha256"] = dataset_sha256(sentences)
    if "created" not in out:
        stamp = (folder / MANIFEST).stat().st_mtime
        out["created"] = _dt.datetime.fromtimestamp(stamp, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def _read_meta(folder: Path, name: str) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise ActivationSetError(
            f"{name}: missing {MANIFEST} (written last: without it the set is incomplete)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ActivationSetError(f"{name}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ActivationSetError(f"{name}: {MANIFEST} must hold a JSON object")
    missing = [field for field in REQUIRED_META if field not in meta]
    if missing:
        raise ActivationSetError(f"{name}: {MANIFEST} lacks {', '.join(missing)}")
    version = meta["format_version"]
    if version not in SUPPORTED_VERSIONS:
        raise ActivationSetError(
            f"{name}: unknown format version {version!r}; this lmclaims reads version(s) "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))} (see docs/activation-format.md)"
        )
    for field in ("n_layers", "d_model"):
        if not isinstance(meta[field], int) or isinstance(meta[field], bool) or meta[field] < 1:
            raise ActivationSetError(
                f"{name}: {MANIFEST} {field} must be a positive integer, got {meta[field]!r}"
            )
    return meta


def _array_path(folder: Path, name: str) -> Path:
    npy, st = folder / ARRAY_NPY, folder / ARRAY_SAFETENSORS
    if npy.is_file() and st.is_file():
        raise ActivationSetError(
            f"{name}: holds both {ARRAY_NPY} and {ARRAY_SAFETENSORS}; keep one"
        )
    if npy.is_file():
        return npy
    if st.is_file():
        return st
    raise ActivationSetError(f"{name}: missing {ARRAY_NPY} (or {ARRAY_SAFETENSORS})")


def _checksums(folder: Path, meta: dict[str, Any], name: str, verify: bool) -> dict[str, str]:
    recorded = meta.get("checksums") or {}
    if not isinstance(recorded, dict):
        raise ActivationSetError(f"{name}: {MANIFEST} checksums must be an object")
    if not verify:
        return dict(recorded)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    actual = {p.name: sha256_file(p) for p in files}
    for file, expected in recorded.items():
        if file not in actual:
            raise ActivationSetError(f"{name}: {file} is listed in {MANIFEST} but missing")
        if actual[file] != expected:
            raise ActivationSetError(
                f"{name}: {file} does not match its checksum in {MANIFEST} (truncated or "
                "changed after writing)"
            )
    return actual


def _load_array(path: Path, name: str) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            array = _mmap_safetensors(path, name)
    except (OSError, ValueError) as exc:
        raise ActivationSetError(f"{name}: cannot read {path.name}: {exc}") from exc
    if array.dtype.name not in DTYPES:
        raise ActivationSetError(
            f"{name}: {path.name} holds {array.dtype.name}; use float16 or float32"
        )
    if array.ndim != 3:
        raise ActivationSetError(
            f"{name}: {path.name} has shape {array.shape}; expected 3 dimensions "
            "(n_layers, n_sentences, d_model)"
        )
    return array


_SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32}


def _mmap_safetensors(path: Path, name: str) -> np.ndarray:
    # The safetensors package checks the file (header, offsets, sizes) and names its tensors,
    # dtypes and shapes; it copies whatever tensor data it returns, so the array itself is a
    # memory map of the data at the offsets the header gives (an 8-byte little-endian header
    # length, the JSON header, then the raw bytes): the set stays on disk.
    try:
        with safe_open(path, framework="numpy") as opened:
            tensors = {key: opened.get_slice(key) for key in opened.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as exc:
        message = f"{name}: {path.name} is not a valid safetensors file: {exc}"
        raise ActivationSetError(message) from exc
    key = SAFETENSORS_KEY
    if key not in tensors:
        if len(tensors) != 1:
            raise ActivationSetError(
                f"{name}: {path.name} must hold one tensor named {SAFETENSORS_KEY!r}, "
                f"found {sorted(tensors)}"
            )
        (key,) = tensors
    dtype = _SAFETENSORS_DTYPES.get(tensors[key].get_dtype())
    if dtype is None:
        raise ActivationSetError(
            f"{name}: {path.name} holds {tensors[key].get_dtype()}; use F16 or F32 "
            "(float16/float32)"
        )
    shape = tuple(tensors[key].get_shape())
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        start, end = json.loads(fh.read(length))[key]["data_offsets"]
    if end - start != int(np.prod(shape)) * np.dtype(dtype).itemsize:
        raise ActivationSetError(f"{name}: {path.name}'s header and data sizes disagree")
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + length + start, shape=shape)


def _read_sentences(path: Path, name: str) -> tuple[pd.DataFrame, list[Any] | None]:
    try:
        with warnings.catch_warnings():
            # A dropped duplicate would shift every later row against the array: an error.
            warnings.simplefilter("error", UserWarning)
            rows = dataset_module.read_jsonl(path)
            # Rows of sampled tokens (token selection "all") share their sentence's text:
            # the position is part of what makes a row a duplicate.
            extra = ("token_position",) if any("token_position" in r for _, r in rows) else ()
            frame = dataset_module.validate(rows, path, extra)
    except UserWarning as exc:
        raise ActivationSetError(
            f"{name}: {exc}; each row of {SENTENCES} must be one row of the array"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ActivationSetError(f"{name}: {SENTENCES} is not valid UTF-8 ({exc})") from exc
    except DatasetError as exc:
        raise ActivationSetError(f"{name}: {exc}") from exc
    tokens = [r.get("n_tokens") for _, r in rows]
    return frame.reset_index(drop=True), tokens if all(isinstance(t, int) for t in tokens) else None


def _check_shape(
    resid: np.ndarray, meta: dict[str, Any], n_rows: int, file: str, name: str
) -> None:
    n_layers, n_sentences, d_model = resid.shape
    if n_sentences != n_rows:
        raise ActivationSetError(
            f"{name}: {file} has {n_sentences} sentences (shape {resid.shape}) but "
            f"{SENTENCES} has {n_rows} rows; they must match one to one, in order"
        )
    for field, actual in (("n_layers", n_layers), ("d_model", d_model)):
        if meta[field] != actual:
            raise ActivationSetError(
                f"{name}: {MANIFEST} says {field}={meta[field]} but {file} has {actual} "
                f"(shape {resid.shape})"
            )


def check_finite(resid: np.ndarray, name: str) -> None:
    """Refuse NaN/inf values, naming the layers that hold them and how many."""
    # One layer at a time: a memory-mapped set is never read into memory whole.
    counts = np.array([int(np.count_nonzero(~np.isfinite(layer))) for layer in resid])
    if counts.any():
        bad = np.flatnonzero(counts)
        where = ", ".join(f"layer {int(i)}: {int(counts[i])}" for i in bad[:5])
        more = f" and {len(bad) - 5} more layer(s)" if len(bad) > 5 else ""
        raise ActivationSetError(
            f"{name}: {int(counts.sum())} NaN/inf values ({where}{more}); the statistics need "
            "finite activations (a float16 overflow, typically: export float32)"
        )


def _n_tokens(folder: Path, column: list[Any] | None, n_rows: int, name: str) -> np.ndarray:
    path = folder / TOKENS
    if path.is_file():
        n_tokens = np.load(path, allow_pickle=False)
        if n_tokens.shape != (n_rows,):
            raise ActivationSetError(
                f"{name}: {TOKENS} has shape {n_tokens.shape}; expected ({n_rows},)"
            )
        return n_tokens
    if column is not None:
        return np.asarray(column, dtype=np.int64)
    # Unknown counts are NaN, so a statistic over them says "unknown" rather than a number.
    return np.full(n_rows, np.nan)
