"""Cache keys: a hash of the fields that decide an entry, and of the code computing it."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any


def key_for(fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:32]


def source_fingerprint(*objects: Any) -> str:
    """A hash of the source files defining ``objects`` (functions, classes, modules): a key
    field that retires an entry when the code computing it, or any helper in its files,
    changes, without anyone bumping a version."""
    files = sorted({inspect.getsourcefile(obj) or "" for obj in objects})
    digest = hashlib.sha256()
    for name in files:
        digest.update(Path(name).read_bytes())
    return digest.hexdigest()[:16]
