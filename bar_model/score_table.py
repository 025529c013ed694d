"""Scores as people read them: one row per domain, one column per checkpoint (0-100, one decimal)."""

from __future__ import annotations

from rich.table import Table


def score_table(columns: dict[str, dict[str, float]], title: str | None = None) -> Table:
    """Rows are domains, columns are checkpoints."""
    table = Table(title=title)
    table.add_column("domain")
    for name in columns:
        table.add_column(name, justify="right")
    rows = list(next(iter(columns.values())))
    for row in rows:
        table.add_row(row, *("–" if scores.get(row) is None else f"{scores[row]:.1f}" for scores in columns.values()))
    return table
