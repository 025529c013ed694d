"""The cache of experts' own scores (evaluated alone), by everything such a score depends on."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from coordinator.state.db import Registry
from coordinator.state.models import ExpertScore


def cached(registry: Registry, digest: str, examples: int, threads: int, evaluator: str) -> ExpertScore | None:
    with registry.session() as session:
        return session.get(ExpertScore, (digest, examples, threads, evaluator))


def remember(registry: Registry, row: ExpertScore) -> None:
    """Keep a score; a worker that scored the same expert meanwhile kept the same figures, so a duplicate is fine."""
    try:
        with registry.session() as session:
            session.add(row)
    except IntegrityError:
        pass


def count(registry: Registry) -> int:
    with registry.session() as session:
        return session.scalar(select(func.count()).select_from(ExpertScore))
