"""The demo's ``report.html``: one self-contained page (no scripts, no downloads) with the score table, a bar chart
drawn as inline SVG, the r1→r2 diff and the wall time of every step, so it opens anywhere and can be attached."""

from __future__ import annotations

import html
from pathlib import Path

COLORS = ("#9e9e9e", "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .3rem .7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; margin-bottom: .3rem; }
code { background: #f4f4f4; padding: 0 .2rem; }
"""


def _cell(value) -> str:
    if value is None:
        return "<td>–</td>"
    if isinstance(value, float):
        return f"<td>{value:.1f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def table(caption: str, header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def bar_chart(
    scores: dict[str, dict[str, float | None]], domains: list[str], width: int = 900, height: int = 320, top_value=100
) -> str:
    """Grouped bars: one group per domain, one bar per model (0 to ``top_value``)."""
    models = list(scores)
    left, bottom, top = 40, 40, 20
    plot_w, plot_h = width - left - 10, height - bottom - top
    group_w = plot_w / max(len(domains), 1)
    bar_w = group_w * 0.8 / max(len(models), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * len(models)}">']
    for tick in range(0, int(top_value) + 1, int(top_value) // 4):
        y = top + plot_h * (1 - tick / top_value)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick}</text>')
    for g, domain in enumerate(domains):
        x0 = left + g * group_w + group_w * 0.1
        for m, model in enumerate(models):
            value = scores[model].get(domain) or 0.0
            bar_h = plot_h * min(value, top_value) / top_value
            x, y = x0 + m * bar_w, top + plot_h - bar_h
            color = COLORS[m % len(COLORS)]
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.9:.1f}" height="{bar_h:.1f}" fill="{color}">'
                f"<title>{html.escape(model)} on {html.escape(domain)}: {value:.1f}</title></rect>"
            )
        label_x = x0 + group_w * 0.4
        parts.append(
            f'<text x="{label_x:.1f}" y="{top + plot_h + 16}" font-size="12" text-anchor="middle">'
            f"{html.escape(domain)}</text>"
        )
    for m, model in enumerate(models):
        y = height + 20 * m
        parts.append(f'<rect x="{left}" y="{y - 10}" width="12" height="12" fill="{COLORS[m % len(COLORS)]}"/>')
        parts.append(f'<text x="{left + 18}" y="{y}" font-size="12">{html.escape(model)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ceiling(kept: dict[str, dict[str, float | None]]) -> int:
    """The retention chart's top: 100% unless a release keeps more, then the next multiple of 25."""
    highest = max((v for row in kept.values() for v in row.values() if v is not None), default=0.0)
    return max(100, 25 * int(-(-highest // 25)))


def write_report(
    path: Path,
    *,
    title: str,
    scores: dict[str, dict[str, float]],
    retention: dict[str, dict[str, float | None]],
    domains: list[str],
    diff_rows: list[list],
    steps: list[tuple[str, float]],
    notes: list[str],
) -> Path:
    """Write the page to ``path`` (atomically: a reader never sees half a report)."""
    score_rows = [[model, *(row.get(d) for d in domains)] for model, row in scores.items()]
    kept = {name: row for name, row in retention.items() if name.endswith("(%)")}
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "".join(f"<p>{html.escape(note)}</p>" for note in notes),
        table("held-out score (0-100)", ["model", *domains], score_rows),
        bar_chart(scores, domains),
        table(
            "retention: each release's score against its expert's own, alone, on the same problems",
            ["model", *domains],
            [[name, *(row.get(d) for d in domains)] for name, row in retention.items()],
        ),
        bar_chart(kept, domains, top_value=_ceiling(kept)),
        table("r1 → r2: what changed", ["part", "r1", "r2", "change"], diff_rows),
        table("steps", ["step", "wall time (s)"], [[name, seconds] for name, seconds in steps]),
    ]
    page = (
        f'<!doctype html><html lang="en"><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style><body>{''.join(body)}</body></html>\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
