"""The harness's import layers (issue 23): every harness import at the top of its file, no
import cycle, and no module importing from a layer above its own. A new module must be
placed in LAYERS, which is where a newcomer reads the architecture from."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"

# Bottom to top: a module may import its own layer and the layers below.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundation: settings, data, statistics, keys, the machine",
        {
            "harness",
            "harness.config",
            "harness.progress",
            "harness.keys",
            "harness.environment",
            "harness.sources",
            "harness.figures",
            "harness.array_file",
            "harness.reservoir",
            "harness.chunked_weights",
            "harness.models",
            "harness.dataset",
            "harness.stats",
        },
    ),
    ("extraction", {"harness.extraction"}),
    ("the activation-set format", {"harness.activations"}),
    ("caches", {"harness.remote_cache", "harness.cache"}),
    ("evidence", {"harness.evidence"}),
    (
        "claims and what is built on evidence",
        {
            "harness.claim",
            "harness.baseline",
            "harness.session",
            "harness.export",
            "harness.synthetic",
            "harness.planted",
            "harness.calibration_table",
        },
    ),
    ("registry, report, xdist bridge", {"harness.registry", "harness.report", "harness.parallel"}),
    ("claim selection, calibration", {"harness.claim_selection", "harness.calibration"}),
    ("entry points", {"harness.claims_plugin", "harness.cli", "harness.plugin"}),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in HARNESS.rglob("*.py")}


def layer_of(name: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        # harness.stats covers its submodules.
        if name in members or any(name.startswith(m + ".") for m in members if m != "harness"):
            return index
    raise KeyError(name)


def harness_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported harness module, line, inside a function) for every import in the file."""
    found = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                names = [child.module, *(f"{child.module}.{a.name}" for a in child.names)]
            else:
                names = []
            for name in names:
                if name in MODULES:
                    found.append((name, child.lineno, inner))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _, _ in harness_imports(path) if target != name}
        for name, path in MODULES.items()
    }


def test_every_module_has_a_layer():
    unplaced = [name for name in MODULES if not _placed(name)]
    assert not unplaced, f"place these in tests/test_layers.py LAYERS: {unplaced}"


def _placed(name: str) -> bool:
    try:
        layer_of(name)
    except KeyError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_and_sit_at_the_top(name):
    own = layer_of(name)
    for target, line, local in harness_imports(MODULES[name]):
        if target == name or target == "harness":
            continue
        where = f"{MODULES[name].relative_to(ROOT)}:{line}"
        assert not local, f"{where}: import {target} at the top of the file"
        assert layer_of(target) <= own, (
            f"{where}: {name} ({LAYERS[own][0]}) imports {target} "
            f"({LAYERS[layer_of(target)][0]}), a layer above"
        )


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])


def test_the_checks_see_an_upward_import(tmp_path):
    # The contract test itself can fail: a foundation module importing evidence is caught.
    assert layer_of("harness.config") < layer_of("harness.evidence")
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from harness import evidence\n")
    assert ("harness.evidence", 2, True) in harness_imports(fake)


def test_the_pytest_entry_point_imports_nothing_heavy():
    # Every pytest start in an environment with lmclaims installed loads harness.plugin
    # (a pytest11 entry point): it must not pull in the statistics stack or torch.
    import subprocess
    import sys

    heavy = ("numpy", "pandas", "scipy", "torch", "transformers", "matplotlib")
    code = f"import sys, harness.plugin; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""
