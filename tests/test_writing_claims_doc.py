"""docs/writing-claims.md cannot rot: its code blocks are the example files, byte for byte,
and the tutorial's calibration tests run here as part of the suite."""

import re
from pathlib import Path

from harness import registry

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-claims.md"
EXAMPLES = ROOT / "docs" / "examples"
# A code block the doc says is a file: the marker line, then a fenced block.
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)


def doc_blocks() -> dict[str, str]:
    return {m["path"]: m["code"] for m in FILE_BLOCK.finditer(DOC.read_text())}


def test_every_example_file_is_in_the_doc_verbatim():
    blocks = doc_blocks()
    files = sorted(str(p.relative_to(ROOT)) for p in EXAMPLES.glob("*.py"))
    assert sorted(blocks) == files
    for path, code in blocks.items():
        assert code == (ROOT / path).read_text(), f"{path} differs from its block in {DOC.name}"


def test_the_tutorial_claim_is_a_claim():
    claim = registry.load_file(EXAMPLES / "test_kurtosis_rises.py")
    assert (claim.spec.id, claim.spec.version, claim.spec.needs) == (
        "kurtosis-rises",
        1,
        ("activations",),
    )


# The tutorial's calibration tests, collected here: docs/ is not a test path, so that a
# plain `pytest` does not also run the tutorial claim on a model.
_calibration = registry.import_file(EXAMPLES / "test_kurtosis_calibration.py")
globals().update({k: v for k, v in vars(_calibration).items() if k.startswith("test_")})
