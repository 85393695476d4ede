"""Content-addressed on-disk cache for activation sets and derived tables.

An entry is a directory named by the hash of everything that determines its content.
It is written under a temporary name and renamed into place, so a reader sees a whole
entry or none; a checksum in its manifest catches truncation or tampering.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.extraction import ActivationSet

FORMAT_VERSION = 1
MANIFEST = "meta.json"


class CacheCorruptError(RuntimeError):
    pass


def key_for(fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:32]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

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
            manifest = write(tmp)
            manifest["format_version"] = FORMAT_VERSION
            manifest["checksums"] = {
                p.name: _sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
            try:
                tmp.rename(final)
            except OSError:
                # Another process published the same key first; its entry is as good.
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _open(self, kind: str, key: str) -> tuple[Path, dict[str, Any]] | None:
        folder = self.entry(kind, key)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            for name, expected in manifest["checksums"].items():
                if _sha256_file(folder / name) != expected:
                    raise CacheCorruptError(f"checksum mismatch in {folder / name}")
        except (OSError, ValueError, KeyError, CacheCorruptError) as exc:
            # A damaged entry is discarded and recomputed, never trusted.
            import warnings

            warnings.warn(f"discarding corrupt cache entry {folder}: {exc}", stacklevel=3)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return folder, manifest

    # Activation sets: the documented activation-set layout (sentences, array, meta).
    def put_activations(self, key: str, acts: ActivationSet, sentences: pd.DataFrame) -> Path:
        def write(folder: Path) -> dict[str, Any]:
            np.save(folder / "resid_post.npy", acts.resid)
            np.save(folder / "n_tokens.npy", acts.n_tokens)
            table = sentences.assign(n_tokens=acts.n_tokens)
            table.to_json(
                folder / "sentences.jsonl", orient="records", lines=True, force_ascii=False
            )
            return dict(acts.meta)

        return self._publish("activations", key, write)

    def get_activations(self, key: str) -> ActivationSet | None:
        opened = self._open("activations", key)
        if opened is None:
            return None
        folder, manifest = opened
        resid = np.load(folder / "resid_post.npy", mmap_mode="r")
        n_tokens = np.load(folder / "n_tokens.npy")
        meta = {k: v for k, v in manifest.items() if k not in ("checksums", "format_version")}
        return ActivationSet(resid, n_tokens, meta)

    # Derived tables (fits, modes, ...): one CSV per entry.
    def put_table(self, kind: str, key: str, table: pd.DataFrame, meta: dict[str, Any]) -> Path:
        def write(folder: Path) -> dict[str, Any]:
            table.to_csv(folder / "table.csv", index=False)
            return dict(meta)

        return self._publish(kind, key, write)

    def get_table(self, kind: str, key: str) -> pd.DataFrame | None:
        opened = self._open(kind, key)
        if opened is None:
            return None
        return pd.read_csv(opened[0] / "table.csv")
