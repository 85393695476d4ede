"""Sentence datasets: the shipped default, and users' own files (JSONL, CSV, the seed's JSON)."""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("subject", "attribute", "text")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file, the place and the fix."""


@dataclass(frozen=True)
class Dataset:
    frame: pd.DataFrame  # columns: id, subject, attribute, text; one row per sentence
    source: str

    @property
    def sha256(self) -> str:
        payload = json.dumps(
            self.frame[["id", *COLUMNS]].to_numpy().tolist(), ensure_ascii=False
        ).encode()
        return hashlib.sha256(payload).hexdigest()

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(self.frame["subject"]))

    @property
    def attributes(self) -> list[str]:
        return list(dict.fromkeys(self.frame["attribute"]))

    def __len__(self) -> int:
        return len(self.frame)


def default_path() -> Path:
    return Path(str(files("harness").joinpath("data/sentences.jsonl")))


# The --lm-sentences-per-pair subset's seed. Fixed, not --lm-seed: the subset decides what is
# measured (activations, fits, every point estimate), and --lm-seed must change only the
# resampled quantities. 0 was the default run seed, so default subsets are unchanged.
SUBSET_SEED = 0


def load(
    path: Path | None = None, sentences_per_pair: int | None = None, seed: int = SUBSET_SEED
) -> Dataset:
    """Load and validate a dataset; ``None`` is the shipped default."""
    path = default_path() if path is None else Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    readers = {".jsonl": read_jsonl, ".csv": _read_csv, ".json": _read_seed_json}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(
            f"{path}: unknown dataset format {path.suffix!r}; use .jsonl (one object per line "
            "with subject, attribute, text), .csv (columns subject, attribute, text) or the "
            "seed study's .json ({'about <subject>': {'in <attribute>': [sentences]}})"
        )
    try:
        rows = reader(path)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not valid UTF-8 at byte {exc.start}; re-save it as UTF-8"
        ) from exc
    frame = validate(rows, path)
    if sentences_per_pair is not None:
        frame = subset(frame, sentences_per_pair, seed)
    return Dataset(frame.reset_index(drop=True), str(path))


def read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object per line")
            rows.append((f"{path}:{number}", obj))
    return rows


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {', '.join(missing)}; the header must name "
                f"{', '.join(COLUMNS)}"
            )
        # Line 1 is the header.
        try:
            return [(f"{path}:{number}", row) for number, row in enumerate(reader, start=2)]
        except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
            raise DatasetError(
                f"{path}:{reader.line_num}: not valid CSV ({exc}); quote fields that hold "
                "commas or newlines, and keep each sentence under 128 KiB"
            ) from exc


def _read_seed_json(path: Path) -> list[tuple[str, dict]]:
    with path.open(encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected {{'about <subject>': {{'in <attribute>': [...]}}}}")
    rows = []
    for subject_key, by_attribute in data.items():
        if not isinstance(by_attribute, dict):
            raise DatasetError(f"{path}: key {subject_key!r} must map attributes to sentence lists")
        subject = subject_key.removeprefix("about ").strip()
        for attribute_key, sentences in by_attribute.items():
            if not isinstance(sentences, list):
                raise DatasetError(f"{path}: [{subject_key!r}][{attribute_key!r}] must be a list")
            attribute = attribute_key.strip()
            for i, text in enumerate(sentences):
                where = f"{path}: [{subject_key!r}][{attribute_key!r}][{i}]"
                rows.append((where, {"subject": subject, "attribute": attribute, "text": text}))
    return rows


def validate(rows: list[tuple[str, dict]], path: Path, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """``extra``: non-negative integer fields every row must have, kept as columns and part
    of the duplicate rule (an activation set's ``token_position``)."""
    if not rows:
        raise DatasetError(f"{path}: the dataset is empty")
    clean = []
    for where, row in rows:
        for column in COLUMNS:
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise DatasetError(f"{where}: {column!r} must be a non-empty string, got {value!r}")
        for column in extra:
            value = row.get(column)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DatasetError(
                    f"{where}: {column!r} must be a non-negative integer, got {value!r}"
                )
        row_id = row.get("id")
        clean.append(
            {
                "id": str(row_id) if row_id is not None else None,
                "subject": row["subject"].strip(),
                "attribute": row["attribute"].strip(),
                "text": row["text"].strip(),
                **{column: row[column] for column in extra},
            }
        )
    frame = pd.DataFrame(clean)
    duplicated = frame.duplicated(subset=[*COLUMNS, *extra])
    if duplicated.any():
        *first, final = ("subject", "attribute", "text", *extra)
        same = f"{', '.join(first)} and {final}"
        warnings.warn(
            f"{path}: dropped {int(duplicated.sum())} duplicate row(s) (same {same})",
            stacklevel=3,
        )
        frame = frame[~duplicated]
    missing_id = frame["id"].isna()
    frame.loc[missing_id, "id"] = [f"row{i}" for i in np.flatnonzero(missing_id.to_numpy())]
    if frame["id"].duplicated().any():
        dup = frame.loc[frame["id"].duplicated(), "id"].iloc[0]
        raise DatasetError(f"{path}: id {dup!r} is used by more than one row; ids must be unique")
    return frame


def subset(frame: pd.DataFrame, per_pair: int, seed: int) -> pd.DataFrame:
    # A seeded choice within each pair, kept in file order so runs are reproducible.
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for _, group in frame.groupby(["subject", "attribute"], sort=False):
        index = group.index.to_numpy()
        if len(index) > per_pair:
            index = np.sort(rng.choice(index, size=per_pair, replace=False))
        keep.extend(index.tolist())
    return frame.loc[sorted(keep)]
