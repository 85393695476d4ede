"""Which claims a pytest run holds: ``--lm-claims`` selection, entry-point claims joining the
run, and ``--lm-list-claims``. The plugin calls in here; the registry itself is pure."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from harness.claim import ClaimSpec, claim_test
from harness.registry import Claim, ClaimError, Registry, entry_point_claims, from_module


def claim_of(item: pytest.Item, root: Path) -> Claim | None:
    """The claim an item tests: a ``claim_test`` function, or a test using ``lm_evidence`` in
    a module with ``SPEC`` and ``evaluate``."""
    function = getattr(item, "function", None)
    spec = getattr(function, "lm_claim", None)
    path = Path(item.path).resolve()
    origin = _relative(path, root)
    if isinstance(spec, ClaimSpec):
        module = getattr(item, "module", None)
        name = module.__name__ if module is not None else str(path)
        evaluate = function.lm_evaluate  # type: ignore[union-attr]  # has lm_claim: not None
        return Claim(spec, evaluate, origin, path, name)
    if "lm_evidence" in getattr(item, "fixturenames", ()) and hasattr(item, "module"):
        try:
            return from_module(item.module, origin)
        except ClaimError as exc:
            raise pytest.UsageError(f"lmclaims: {exc}") from exc
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _requested(config: pytest.Config) -> list[str] | None:
    value = config.getoption("lm_claims")
    if value is None:
        value = config.getini("lm_claims")
    if not value:
        return None
    ids = [part.strip() for part in str(value).split(",") if part.strip()]
    if not ids:  # "--lm-claims ," would select nothing and exit 5 without a word
        raise pytest.UsageError(f"lmclaims: --lm-claims {value!r} names no claim id")
    return ids


class EntryPointClaim(pytest.Module):
    """An installed package's claim, collected without the user naming its file: a module
    holding only its ``claim_test``, so it runs through the same fixtures and report."""

    claim: Claim

    def _getobj(self) -> types.ModuleType:
        module = types.ModuleType(self.claim.module)
        test = claim_test(self.claim.spec, self.claim.evaluate)
        setattr(module, test.__name__, test)
        return module


def apply(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check the collected claims are one registry; with ``--lm-claims`` keep only the
    selected ones and add selected entry-point claims that no collected file holds."""
    root = config.rootpath
    claims = {id(item): claim_of(item, root) for item in items}
    requested = _requested(config)
    found = [c for c in claims.values() if c is not None]
    try:
        # Entry points are read only for a selection: a broken third-party claim package
        # must not stop runs that never asked for it.
        registry = Registry.build(found + (entry_point_claims() if requested else []))
        if requested is None:
            return
        selected = set(registry.select(requested))
    except ClaimError as exc:
        raise pytest.UsageError(f"lmclaims: {exc}") from exc

    keep: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        claim = claims[id(item)]
        (deselected if claim is not None and claim.spec.id not in selected else keep).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    collected_paths = {c.path for c in found}
    for claim_id in sorted(selected):
        claim = registry.claims[claim_id]
        if claim.path in collected_paths and claim.path is not None:
            continue
        keep.extend(_entry_point_items(session, claim))
    items[:] = keep


def _entry_point_items(session: pytest.Session, claim: Claim) -> list[pytest.Item]:
    path = claim.path or session.config.rootpath
    # A node id that reads as the module's import path: stable across machines.
    nodeid = claim.module.replace(".", "/") + ".py"
    collector = EntryPointClaim.from_parent(session, path=path, nodeid=nodeid)
    collector.claim = claim
    return list(session.genitems(collector))


def list_claims(config: pytest.Config) -> int | pytest.ExitCode:
    """``pytest --lm-list-claims``: collect (as ``--fixtures`` does), print, run nothing."""
    from _pytest.main import wrap_session

    return wrap_session(config, _list_main)


def _list_main(config: pytest.Config, session: pytest.Session) -> int | pytest.ExitCode:
    session.perform_collect()
    root = config.rootpath
    found = [c for c in (claim_of(item, root) for item in session.items) if c is not None]
    writer = config.get_terminal_writer()
    try:
        registry = Registry.build(found + entry_point_claims())
    except ClaimError as exc:
        writer.line(f"lmclaims: {exc}", red=True)
        return pytest.ExitCode.USAGE_ERROR
    writer.line(registry.table() if registry.claims else "no claims found")
    return 0
