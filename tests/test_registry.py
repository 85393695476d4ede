"""The claim API and its registry without a pytest run: spec checks, claim_test, discovery
from modules and files, duplicates, selection, the listing, and the built-in claims using
exactly this public API."""

import ast
import sys
import types
from pathlib import Path

import pytest

from harness import registry
from harness.claim import EVIDENCE_KINDS, ClaimSpec, ClaimSpecError, Verdict, claim_test
from harness.registry import Claim, ClaimError, Registry

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = sorted((ROOT / "claims").glob("test_*.py"))


def spec(claim_id: str = "my-claim", **changes) -> ClaimSpec:
    fields = dict(
        id=claim_id,
        version=1,
        title="t",
        source="a paper",
        quote="q",
        statistic="s",
    )
    return ClaimSpec(**(fields | changes))


def module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def evaluate(evidence, spec):
    return spec.result(evidence.model, Verdict.SUPPORTED, "e", n=1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "My Claim"}, "claim id 'My Claim' must be lower-case words joined by '-'"),
        ({"id": "trailing-"}, "must be lower-case words"),
        ({"version": 0}, "version must be an int >= 1, not 0"),
        ({"version": "2"}, "version must be an int >= 1, not '2'"),
        ({"needs": ("activations", "logits")}, "needs must be a non-empty tuple of"),
        ({"needs": "fits"}, "needs must be a non-empty tuple of"),
        ({"needs": ()}, "needs must be a non-empty tuple of"),
    ],
)
def test_bad_specs_fail_where_they_are_written(changes, message):
    with pytest.raises(ClaimSpecError, match=message.replace("(", r"\(")):
        spec(**changes)


def test_every_evidence_kind_is_a_valid_need():
    assert spec(needs=EVIDENCE_KINDS).needs == EVIDENCE_KINDS


def test_claim_test_calls_evaluate_with_its_spec_and_records_through_lm_verdict():
    s = spec("kurtosis-rises")
    test = claim_test(s, evaluate)
    assert test.__name__ == "test_kurtosis_rises"
    assert test.lm_claim is s
    recorded = []
    test(types.SimpleNamespace(model="m"), lambda sp, result: recorded.append((sp, result)))
    [(got_spec, result)] = recorded
    assert got_spec is s
    assert (result.claim_id, result.claim_version, result.model) == ("kurtosis-rises", 1, "m")


def test_claim_test_rejects_a_non_spec():
    with pytest.raises(ClaimSpecError, match="needs a ClaimSpec"):
        claim_test({"id": "x"}, evaluate)


def test_from_module():
    assert registry.from_module(module("plain")) is None
    claim = registry.from_module(module("m", SPEC=spec(), evaluate=evaluate), "here")
    assert (claim.spec.id, claim.origin, claim.module) == ("my-claim", "here", "m")
    with pytest.raises(ClaimError, match=r"SPEC must be a harness\.claim\.ClaimSpec"):
        registry.from_module(module("m", SPEC={"id": "x"}, evaluate=evaluate))
    with pytest.raises(ClaimError, match="claim my-claim has no evaluate"):
        registry.from_module(module("m", SPEC=spec()))


def claim(claim_id: str, origin: str, path: str | None = None) -> Claim:
    return Claim(spec(claim_id), evaluate, origin, Path(path) if path else None, origin)


def test_registry_sorts_and_merges_the_same_module_reached_twice():
    reg = Registry.build(
        [
            claim("b", "claims/test_b.py", "/x/b.py"),
            claim("a", "ep a", "/x/a.py"),
            claim("b", "entry point b", "/x/b.py"),
        ]
    )
    assert list(reg.claims) == ["a", "b"]
    assert reg.claims["b"].origin == "claims/test_b.py"


def test_duplicate_ids_from_two_modules_name_both():
    with pytest.raises(ClaimError, match=r"'b' is declared twice: by one\.py and by two\.py"):
        Registry.build([claim("b", "one.py", "/x/one.py"), claim("b", "two.py", "/x/two.py")])


def test_select_checks_ids_and_suggests():
    reg = Registry.build([claim("left-modes-decline", "f"), claim("logistic-dominance", "g")])
    assert reg.select([" logistic-dominance", "logistic-dominance", ""]) == ("logistic-dominance",)
    with pytest.raises(ClaimError, match="Did you mean 'left-modes-decline'"):
        reg.select(["left-mode-decline"])
    with pytest.raises(ClaimError, match=r"unknown claim 'zzz'\. Known claims: left-modes"):
        reg.select(["zzz"])


def test_table_lists_id_version_needs_source_and_origin():
    a_b = Claim(spec("a-b", version=3, needs=("fits",)), evaluate, "o.py", None, "o")
    reg = Registry.build([a_b])
    lines = reg.table().splitlines()
    assert lines[0].split() == ["claim", "version", "needs", "source", "defined", "in"]
    assert lines[2].split() == ["a-b", "3", "fits", "a", "paper", "o.py"]


def test_token_selections_are_the_second_selections_a_claim_reads():
    # calibration gives a real-data null only the second sets a claim reads (their hashes
    # key its reps), so a claim reading none must list none.
    assert spec(needs=("activations", "fits")).token_selections == ()
    assert spec(needs=("activations", "activations:last")).token_selections == ("last",)


def test_load_file_imports_a_claim_module(tmp_path):
    path = tmp_path / "test_one.py"
    path.write_text(
        "from harness.claim import ClaimSpec\n"
        "SPEC = ClaimSpec(id='one', version=2, title='t', source='s', quote='q', statistic='x')\n"
        "def evaluate(evidence, spec=SPEC):\n    return None\n"
    )
    loaded = registry.load_file(path)
    assert (loaded.spec.id, loaded.spec.version, loaded.path) == ("one", 2, path.resolve())
    (tmp_path / "test_none.py").write_text("X = 1\n")
    with pytest.raises(ClaimError, match="defines no SPEC"):
        registry.load_file(tmp_path / "test_none.py")
    with pytest.raises(ClaimError, match="no claim module at"):
        registry.load_file(tmp_path / "missing.py")


# ------------------------------------------------- the built-in claims use the public API


def test_the_five_findings_are_builtin_claims():
    ids = {registry.load_file(path).spec.id for path in BUILTIN}
    assert ids >= {
        "logistic-dominance",
        "final-layer-bimodality",
        "left-modes-decline",
        "japanese-sharper-modes",
        "distinctiveness-shrinks",
    }


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_claim_uses_the_public_api(path):
    loaded = registry.load_file(path)
    tree = ast.parse(path.read_text())
    # Its only test is the one claim_test builds, bound to the module's test_ name.
    test = getattr(sys.modules[loaded.module], path.stem)
    assert test.lm_claim is loaded.spec and test.lm_evaluate is loaded.evaluate
    tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    assert tests == []
    # Results are built by spec.result (id and version filled in), never by hand.
    calls = [
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    ]
    assert "ClaimResult" not in calls


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_claim_declares_the_evidence_tables_it_reads(path):
    # `needs` is what --lm-list-claims shows: it must match what evaluate reads.
    loaded = registry.load_file(path)
    module = sys.modules[loaded.module]
    tree = ast.parse(path.read_text())
    read = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id == "evidence"
        and n.attr in EVIDENCE_KINDS
    }
    # evidence.under_tokens(X): a second token selection, X a literal or a module constant.
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "under_tokens":
            (arg,) = n.args
            tokens = arg.value if isinstance(arg, ast.Constant) else getattr(module, arg.id)
            read.add(f"activations:{tokens}")
    assert read | {"activations"} == set(loaded.spec.needs)


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_claim_says_how_its_tests_are_corrected(path):
    # A verdict resting on several tests must say how their family is controlled (issue 18
    # item 8); one resting on a single test must say so.
    statement = registry.load_file(path).spec.multiplicity
    assert len(statement) > 40
    assert any(word in statement for word in ("One ", "intersection-union", "Holm", "Benjamini"))
