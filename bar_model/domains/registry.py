"""The domains by name: each built-in domain module registers its own when it is imported."""

from __future__ import annotations

from bar_model.domains.base import Domain
from protocol.errors import BarFedError

_REGISTRY: dict[str, Domain] = {}


def register(domain: Domain) -> Domain:
    if domain.name in _REGISTRY:
        raise ValueError(f"domain {domain.name!r} registered twice")
    _REGISTRY[domain.name] = domain
    return domain


def domain_names() -> list[str]:
    return sorted(_REGISTRY)


def get_domain(name: str) -> Domain:
    try:
        return _REGISTRY[name]
    except KeyError:
        core = ", ".join(n for n in sorted(_REGISTRY) if not n.startswith("p-"))
        raise BarFedError(
            "UNKNOWN_DOMAIN",
            f"there is no domain named {name!r}; choose one of {core} or a parametric p-* domain "
            "(`barfed model domains` lists them all).",
        ) from None
