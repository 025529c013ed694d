"""Synthetic domains with verifiable scorers, and the registry that names them."""

from __future__ import annotations

from bar_model.domains.base import Domain, Example
from protocol.errors import BarFedError

_REGISTRY: dict[str, Domain] = {}
_builtin_loaded = False


def register(domain: Domain) -> Domain:
    if domain.name in _REGISTRY:
        raise ValueError(f"domain {domain.name!r} registered twice")
    _REGISTRY[domain.name] = domain
    return domain


def _load_builtin() -> None:
    """Import the built-in domain modules (importing one registers its domains)."""
    global _builtin_loaded
    if not _builtin_loaded:
        from bar_model.domains import code, general, math, parametric, safety, tool_use  # noqa: F401

        _builtin_loaded = True


def domain_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_domain(name: str) -> Domain:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        core = ", ".join(n for n in sorted(_REGISTRY) if not n.startswith("p-"))
        raise BarFedError(
            "UNKNOWN_DOMAIN",
            f"there is no domain named {name!r}; choose one of {core} or a parametric p-* domain "
            "(`barfed model domains` lists them all).",
        ) from None


__all__ = ["Domain", "Example", "domain_names", "get_domain", "register"]
