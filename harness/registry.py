"""One registry of claims: claim modules collected by pytest and modules that installed
packages name in the ``lmclaims.claims`` entry-point group.

A claim module exposes ``SPEC`` (a ClaimSpec) and ``evaluate(evidence, spec) -> ClaimResult``;
a module under ``claims/`` also binds ``test_<id> = claim_test(SPEC, evaluate)`` so pytest
collects it. An installed package declares its modules as entry points::

    [project.entry-points."lmclaims.claims"]
    my-claim = "my_package.my_claim"

Two different modules declaring one claim id is an error naming both.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tabulate import tabulate

from harness.claim import ClaimSpec, Evaluate

ENTRY_POINT_GROUP = "lmclaims.claims"


class ClaimError(Exception):
    """A claim that cannot be registered or selected: bad module, duplicate or unknown id."""


@dataclass(frozen=True)
class Claim:
    spec: ClaimSpec
    evaluate: Evaluate
    # Where it was found, for listings and error messages: a file, or an entry point.
    origin: str
    # The module's file: one file reached twice (collected and by entry point) is one claim.
    path: Path | None
    module: str


def _file(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def from_module(module: ModuleType, origin: str | None = None) -> Claim | None:
    """The claim a module declares, or None when it has no ``SPEC``."""
    spec = getattr(module, "SPEC", None)
    if spec is None:
        return None
    path = _file(module)
    where = origin or str(path or module.__name__)
    if not isinstance(spec, ClaimSpec):
        raise ClaimError(f"{where}: SPEC must be a harness.claim.ClaimSpec, not {type(spec)}")
    evaluate = getattr(module, "evaluate", None)
    if not callable(evaluate):
        raise ClaimError(f"{where}: claim {spec.id} has no evaluate(evidence, spec) function")
    return Claim(spec, evaluate, where, path, module.__name__)


def import_file(path: Path | str, name: str | None = None) -> ModuleType:
    """Import a module from its file, under its own name (default ``lmclaims_claim_<stem>``),
    apart from any copy pytest collects: claim folders are not packages."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ClaimError(f"no claim module at {path}")
    module_name = name or f"lmclaims_claim_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ClaimError(f"{path} is not an importable Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before running, as a normal import would: dataclasses defined in the
    # module look their module up in sys.modules.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_file(path: Path | str, name: str | None = None) -> Claim:
    """The claim a claim module's file declares (e.g. for its calibration test); calling
    its ``evaluate`` has no pytest side effects."""
    path = Path(path).resolve()
    module = import_file(path, name)
    claim = from_module(module, str(path))
    if claim is None:
        raise ClaimError(f"{path} defines no SPEC; a claim module needs SPEC and evaluate")
    return claim


def entry_point_claims() -> list[Claim]:
    """Claims that installed packages declare in the ``lmclaims.claims`` group."""
    claims = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
        origin = f"entry point {ep.name} = {ep.value}{dist}"
        try:
            loaded = ep.load()
        except Exception as exc:  # any import failure of a third-party module
            raise ClaimError(f"{origin} failed to import: {type(exc).__name__}: {exc}") from exc
        if not isinstance(loaded, ModuleType):
            raise ClaimError(f"{origin} must name a module (exposing SPEC and evaluate)")
        claim = from_module(loaded, origin)
        if claim is None:
            raise ClaimError(f"{origin}: the module defines no SPEC")
        claims.append(claim)
    return claims


@dataclass(frozen=True)
class Registry:
    claims: Mapping[str, Claim]

    @classmethod
    def build(cls, claims: Iterable[Claim]) -> Registry:
        """Claims by id; the same module met twice counts once, two modules one id is an error."""
        found: dict[str, Claim] = {}
        for claim in claims:
            seen = found.get(claim.spec.id)
            if seen is None:
                found[claim.spec.id] = claim
            elif not _same_module(seen, claim):
                raise ClaimError(
                    f"claim id {claim.spec.id!r} is declared twice: by {seen.origin} and by "
                    f"{claim.origin}; rename one of them"
                )
        return cls(dict(sorted(found.items())))

    def select(self, requested: Iterable[str]) -> tuple[str, ...]:
        """The requested ids, checked: an unknown id is an error with a suggestion."""
        ids = tuple(dict.fromkeys(r.strip() for r in requested if r.strip()))
        for claim_id in ids:
            if claim_id not in self.claims:
                close = difflib.get_close_matches(claim_id, list(self.claims), n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                known = ", ".join(self.claims) or "none"
                raise ClaimError(f"unknown claim {claim_id!r}.{hint} Known claims: {known}")
        return ids

    def table(self) -> str:
        """id, version, evidence needed, source and origin of every claim."""
        rows = [
            [c.spec.id, c.spec.version, ", ".join(c.spec.needs), c.spec.source, c.origin]
            for c in self.claims.values()
        ]
        headers = ["claim", "version", "needs", "source", "defined in"]
        return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _same_module(a: Claim, b: Claim) -> bool:
    if a.path is not None and b.path is not None:
        return a.path == b.path
    return a.module == b.module
