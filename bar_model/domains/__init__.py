"""Synthetic domains with verifiable scorers, registered by name (`registry`) as their modules load below."""

from __future__ import annotations

from bar_model.domains import code, general, math, parametric, safety, tool_use  # noqa: F401  (each registers its own)
from bar_model.domains.base import Domain, Example
from bar_model.domains.registry import domain_names, get_domain, register

CORE_DOMAINS = ("math", "code", "tool_use", "safety", "general")  # the BAR paper's four, and the anchor's general

__all__ = ["CORE_DOMAINS", "Domain", "Example", "domain_names", "get_domain", "register"]
