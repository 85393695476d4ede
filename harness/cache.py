"""Content-addressed on-disk cache for activation sets and derived tables.

An entry is a directory named by the hash of everything that determines its content.
It is written under a temporary name and renamed into place, so a reader sees a whole
entry or none; a checksum in its manifest catches truncation or tampering.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import activations as activation_format
from harness import remote_cache
from harness.array_file import NpyFile
from harness.extraction import ActivationSet, Allocate

# One format for cache entries and exported sets (harness/activations.py).
FORMAT_VERSION = activation_format.FORMAT_VERSION
MANIFEST = activation_format.MANIFEST


def _is_text(column: pd.Series) -> bool:
    # pandas 3 gives text its own "str" dtype, older pandas object
    return pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column)


class CacheCorruptError(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Cache:
    def __init__(self, root: Path | str, staging: Path | None = None) -> None:
        # A URL cache (memory://, s3://, ...) is used through a local staging folder:
        # entries are fetched whole on read and uploaded whole on write.
        self.remote, self.root = remote_cache.open_root(root, staging)

    def sweep_stale(self) -> int:
        """Remove temporary entries left by processes that were killed mid-write."""
        removed = 0
        for tmp in self.root.glob("*/.*.tmp-*"):
            pid = tmp.name.rsplit(".tmp-", 1)[1].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        return removed

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def _publish(self, kind: str, key: str, write: Any) -> Path:
        final = self.entry(kind, key)
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            activation_format.write_manifest(tmp, write(tmp))
            try:
                tmp.rename(final)
            except OSError:
                # Another process published the same key first; its entry is as good.
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.remote is not None:
            self.remote.push(kind, key, final)
        return final

    def _open(self, kind: str, key: str) -> tuple[Path, dict[str, Any]] | None:
        folder = self.entry(kind, key)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file() and not (
            self.remote is not None and self.remote.fetch(kind, key, folder)
        ):
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            for name, expected in manifest["checksums"].items():
                if activation_format.sha256_file(folder / name) != expected:
                    raise CacheCorruptError(f"checksum mismatch in {folder / name}")
        except (OSError, ValueError, KeyError, CacheCorruptError) as exc:
            # A damaged entry is discarded and recomputed, never trusted.
            import warnings

            warnings.warn(f"discarding corrupt cache entry {folder}: {exc}", stacklevel=3)
            shutil.rmtree(folder, ignore_errors=True)
            if self.remote is not None:
                self.remote.discard(kind, key)
            return None
        return folder, manifest

    # Activation sets: the documented activation-set layout (sentences, array, meta).
    def put_activations(self, key: str, acts: ActivationSet, sentences: pd.DataFrame) -> Path:
        def write(folder: Path) -> dict[str, Any]:
            return activation_format.write_files(folder, acts, sentences)

        return self._publish("activations", key, write)

    def put_extracted(
        self,
        key: str,
        sentences: pd.DataFrame,
        extract: Callable[[Allocate, Callable[[], None]], ActivationSet],
    ) -> ActivationSet:
        """Publish an extraction that writes straight into the entry's array file.

        ``extract(allocate, after_batch)`` must fill the array ``allocate(shape)`` returns
        and call ``after_batch()`` after each batch: the written pages then leave RAM, so
        memory does not grow with the number of sentences, and an interrupted extraction
        leaves only a temporary entry, which the next run sweeps away.
        """
        produced: list[ActivationSet] = []

        def write(folder: Path) -> dict[str, Any]:
            target = NpyFile(folder / activation_format.ARRAY_NPY)
            acts = extract(target.allocate, target.release)
            target.flush()
            produced.append(acts)
            return activation_format.write_files(folder, acts, sentences, in_place=True)

        self._publish("activations", key, write)
        return produced[0]

    def get_activations(self, key: str) -> ActivationSet | None:
        stored = self.get_activation_set(key)
        return None if stored is None else stored.activations

    def get_activation_set(self, key: str) -> activation_format.StoredSet | None:
        """The entry with its row table (for token selection "all", one row per token)."""
        opened = self._open("activations", key)
        if opened is None:
            return None
        # _open has checked the checksums; entries were checked for NaN/inf when extracted.
        try:
            stored = activation_format.read(opened[0], verify=False, check_values=False)
        except activation_format.ActivationSetError as exc:
            import warnings

            # Its checksums matched, so the files are as written: kept (activations are
            # expensive) for a reader that can use them, and recomputed for this run.
            warnings.warn(f"ignoring unreadable cache entry {opened[0]}: {exc}", stacklevel=3)
            return None
        return stored

    # Derived tables (fits, modes, ...): one CSV per entry.
    def put_table(self, kind: str, key: str, table: pd.DataFrame, meta: dict[str, Any]) -> Path:
        def write(folder: Path) -> dict[str, Any]:
            table.to_csv(folder / "table.csv", index=False)
            # Text columns are named, so a text that looks like a number ("1", a list of
            # one dimension) reads back as text: a warm run's table equals the cold one's.
            text = [str(c) for c in table.columns if _is_text(table[c])]
            return dict(meta) | {"text_columns": text}

        return self._publish(kind, key, write)

    def get_table(self, kind: str, key: str) -> pd.DataFrame | None:
        opened = self._open(kind, key)
        if opened is None:
            return None
        # Only an empty field is missing (how to_csv writes NaN): a subject called "NA" or
        # "null" stays a string.
        text = {c: str for c in opened[1].get("text_columns", [])}
        return pd.read_csv(
            opened[0] / "table.csv", keep_default_na=False, na_values=[""], dtype=text
        )

    # Derived arrays (a claim's intermediate results): one uncompressed .npz per entry.
    def put_arrays(
        self, kind: str, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> Path:
        def write(folder: Path) -> dict[str, Any]:
            np.savez(folder / "arrays.npz", **arrays)  # type: ignore[arg-type]  # names, not flags
            return dict(meta)

        return self._publish(kind, key, write)

    def get_arrays(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        opened = self._open(kind, key)
        if opened is None:
            return None
        # No pickles: an entry holds numeric and string arrays only.
        with np.load(opened[0] / "arrays.npz", allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
