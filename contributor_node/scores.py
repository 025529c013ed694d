"""An expert's local scores (evals/<domain>[-v<N>].json): held-out problems of its domain and the core domains,
computed by `eval` once per expert and n, and shipped by `package` when they belong to the expert it packages."""

from __future__ import annotations

from bar_model.domains import CORE_DOMAINS
from contributor_node.home import NodeHome, read_json, write_json


def scored_domains(domain: str) -> list[str]:
    return [domain, *(d for d in CORE_DOMAINS if d != domain)]


def recorded_scores(home: NodeHome, domain: str, version: int, card: dict, n: int | None = None) -> dict | None:
    """The saved scores of the expert ``card`` describes (on ``n`` problems, if given); None when there are none."""
    saved = read_json(home.scores(domain, version))
    if saved and saved["expert_created_at"] == card["created_at"] and n in (None, saved["n"]):
        return saved
    return None


def score_expert(home: NodeHome, domain: str, version: int, card: dict, n: int) -> dict:
    """Score expert v``version`` on ``n`` problems of each of ``scored_domains(domain)`` and save the scores."""
    from bar_model.evaluate import evaluate, load_model  # torch and transformers: only when there is scoring to do

    model, tokenizer = load_model(home.expert(domain, version))
    scores = evaluate(model, tokenizer, scored_domains(domain), n=n)
    saved = {"scores": scores, "n": n, "expert_created_at": card["created_at"]}
    write_json(home.scores(domain, version), saved)
    return saved
