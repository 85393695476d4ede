"""The shipped dataset's content, and every loader and bad-input path."""

import json
import re
from collections import Counter
from itertools import combinations

import pytest

from harness import dataset
from harness.dataset import DatasetError

SUBJECTS = [
    "economics",
    "music",
    "computer science",
    "celebrities",
    "politics",
    "effective altruism",
    "poetry",
    "science fiction",
    "vacation",
    "american football",
]
ATTRIBUTES = [
    "in english",
    "in spanish",
    "in japanese",
    "in all upper case",
    "in all lower case",
    "in an angry tone",
    "in a kind tone",
    "in a concise style",
    "in a didactic style",
    "in a helpful style",
    "in a flowery style",
    "in a childish style",
]
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
SPANISH_WORDS = {"el", "la", "de", "que", "los", "las", "en", "es", "y", "un", "una", "por", "con"}


@pytest.fixture(scope="module")
def shipped():
    return dataset.load().frame


def test_full_factorial_with_at_least_20_per_pair(shipped):
    counts = Counter(zip(shipped["subject"], shipped["attribute"], strict=True))
    assert set(shipped["subject"]) == set(SUBJECTS)
    assert set(shipped["attribute"]) == set(ATTRIBUTES)
    assert len(counts) == 120
    assert min(counts.values()) >= 20
    assert len(shipped) >= 2400


def test_language_and_case_rules(shipped):
    by = shipped.groupby("attribute")["text"]
    assert all(JAPANESE.search(t) for t in by.get_group("in japanese"))
    assert all(t == t.upper() for t in by.get_group("in all upper case"))
    assert all(t == t.lower() for t in by.get_group("in all lower case"))
    for text in by.get_group("in spanish"):
        words = set(re.findall(r"\w+", text.lower()))
        assert words & SPANISH_WORDS, text
    english = shipped[shipped["attribute"] != "in japanese"]["text"]
    lengths = english.str.split().str.len()
    assert lengths.min() >= 5 and lengths.max() <= 60


def test_no_exact_or_near_duplicates(shipped):
    texts = list(shipped["text"])
    assert len(set(texts)) == len(texts)

    def shingles(text: str) -> set:
        # Character 4-grams work for Japanese (no spaces) and English alike.
        t = re.sub(r"\s+", " ", text.lower())
        return {t[i : i + 4] for i in range(len(t) - 3)}

    sets = [shingles(t) for t in texts]
    # Compare within each attribute, where a template with swapped words would show up.
    for _, index in shipped.groupby("attribute").indices.items():
        for i, j in combinations(index, 2):
            a, b = sets[i], sets[j]
            jaccard = len(a & b) / len(a | b)
            assert jaccard < 0.7, (texts[i], texts[j])


def _write(path, text):
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_jsonl_csv_and_seed_json_round_trip(tmp_path):
    rows = [
        ("music", "in english", "A chord is three notes."),
        ("music", "in spanish", "La música es arte."),
        ("poetry", "in english", "A sonnet has fourteen lines."),
    ]
    jsonl = _write(
        tmp_path / "d.jsonl",
        "".join(
            json.dumps({"subject": s, "attribute": a, "text": t}, ensure_ascii=False) + "\n"
            for s, a, t in rows
        ),
    )
    csv = _write(
        tmp_path / "d.csv",
        "subject,attribute,text\n" + "".join(f'{s},{a},"{t}"\n' for s, a, t in rows),
    )
    seed = {}
    for s, a, t in rows:
        seed.setdefault(f"about {s}", {}).setdefault(a, []).append(t)
    js = _write(tmp_path / "d.json", json.dumps(seed, ensure_ascii=False))
    for path in (jsonl, csv, js):
        frame = dataset.load(path).frame
        assert list(zip(frame["subject"], frame["attribute"], frame["text"], strict=True)) == rows


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.txt", "x", "unknown dataset format '.txt'"),
        ("d.jsonl", '{"subject": "a", "attribute": "b"}\n', r"d\.jsonl:1: 'text' must be"),
        ("d.jsonl", '{"subject": "a", "attribute": "b", "text": ""}\n', "non-empty string"),
        ("d.jsonl", '{"subject": "a", "attribute": "b", "text": 3}\n', "non-empty string"),
        ("d.jsonl", "not json\n", r"d\.jsonl:1: not valid JSON"),
        ("d.jsonl", b'{"subject": "a", "attribute": "b", "text": "\xff"}\n', "not valid UTF-8"),
        ("d.csv", "subject,text\na,b\n", "missing column"),
        ("d.json", '{"about x": ["a"]}', "must map attributes"),
        ("d.jsonl", "", "empty"),
    ],
)
def test_bad_input_names_file_place_and_fix(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(DatasetError, match=message):
        dataset.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        dataset.load(tmp_path / "nope.jsonl")


def test_duplicates_are_dropped_with_a_warning(tmp_path):
    line = json.dumps({"subject": "a", "attribute": "b", "text": "same"}) + "\n"
    path = _write(tmp_path / "d.jsonl", line * 3)
    with pytest.warns(UserWarning, match="dropped 2 duplicate"):
        assert len(dataset.load(path)) == 1


def test_sentences_per_pair_is_a_seeded_subset(shipped):
    a = dataset.load(sentences_per_pair=5, seed=1).frame
    b = dataset.load(sentences_per_pair=5, seed=1).frame
    c = dataset.load(sentences_per_pair=5, seed=2).frame
    assert a.equals(b) and not a["id"].equals(c["id"])
    assert a.groupby(["subject", "attribute"]).size().eq(5).all()


def test_content_hash_tracks_content(tmp_path):
    line = json.dumps({"subject": "a", "attribute": "b", "text": "one"}) + "\n"
    one = dataset.load(_write(tmp_path / "a.jsonl", line)).sha256
    two = dataset.load(_write(tmp_path / "b.jsonl", line.replace("one", "two"))).sha256
    assert one != two and len(one) == 64
