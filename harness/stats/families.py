"""Distribution families by name: the study's 19, the extras, and the named sets (study,
core, all). No scipy here: the plugin resolves --lm-families at configure time with it."""

from __future__ import annotations

from collections.abc import Sequence

# The study's code fits exactly these 19, in this order.
STUDY_FAMILIES: tuple[str, ...] = (
    "crystalball",
    "genlogistic",
    "gennorm",
    "hypsecant",
    "johnsonsb",
    "johnsonsu",
    "laplace",
    "laplace_asymmetric",
    "loggamma",
    "logistic",
    "norm",
    "norminvgauss",
    "pearson3",
    "powernorm",
    "skewnorm",
    "t",
    "truncnorm",
    "vonmises",
    "vonmises_line",
)
EXTRA_FAMILIES: tuple[str, ...] = (
    "cauchy",
    "nct",
    "burr12",
    "genextreme",
    "gumbel_r",
    "lognorm",
    "exponnorm",
    "dweibull",
)
FAMILY_NAMES: tuple[str, ...] = STUDY_FAMILIES + EXTRA_FAMILIES
LOGISTIC_FAMILY = frozenset({"logistic", "genlogistic", "hypsecant"})
CORE_FAMILIES: tuple[str, ...] = ("norm", "logistic", "genlogistic", "hypsecant", "gennorm", "t")


class FamilyError(ValueError):
    pass


def resolve_families(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Parse a family selection: names, or the sets ``study``, ``core``, ``all``."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    sets = {"study": STUDY_FAMILIES, "core": CORE_FAMILIES, "all": FAMILY_NAMES}
    out: list[str] = []
    for name in names:
        for member in sets.get(name, (name,)):
            if member not in FAMILY_NAMES:
                raise FamilyError(
                    f"unknown distribution family {member!r}; valid names: "
                    f"{', '.join(FAMILY_NAMES)} (or the sets study, core, all)"
                )
            if member not in out:
                out.append(member)
    if not out:
        raise FamilyError("no distribution family selected")
    return tuple(out)


def check_names(families: Sequence[str]) -> None:
    unknown = [name for name in families if name not in FAMILY_NAMES]
    if unknown:
        raise FamilyError(
            f"unknown distribution famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; valid names: {', '.join(FAMILY_NAMES)}"
        )
