"""The router row an organization ships when it shares no calibration sample (`package --no-calibration`).

FlexOlmo's domain-informed router: the expert's row in every layer points along the mean hidden state that
the anchor computes entering that layer's FFN on the organization's own domain data, so the merged model
routes that domain's tokens toward this expert without a single example leaving the node. The row keeps the
norm the trained row had (the logit scale the expert learned). The coordinator keeps such a row frozen
(`keep_rows` in coordinator/release/build.py), since it has nothing to train it on.
"""

from __future__ import annotations

from pathlib import Path

EXPERT_SLOT = 1  # a 2-expert training checkpoint: slot 0 is the anchor's, slot 1 this organization's


def privacy_router_rows(anchor_dir: Path, expert_dir: Path, domain: str, recipe) -> dict:
    """{router tensor name: the expert's router matrix with its row replaced}, from ``recipe``'s SFT pool of
    ``domain`` (the data the expert was tuned on, read on this node only)."""
    from bar_model.checkpoint import SafetensorsCheckpoint
    from bar_model.domains import get_domain
    from bar_model.evaluate import load_model
    from bar_model.router import mean_hidden_states
    from protocol.layout import router_key

    model, tokenizer = load_model(anchor_dir)
    examples = get_domain(domain).sft(recipe.domain_pool, recipe.seed)
    means = mean_hidden_states(model, tokenizer, examples)
    checkpoint = SafetensorsCheckpoint(expert_dir)
    rows = {}
    for layer in range(means.shape[0]):
        name = router_key(layer)
        weight = checkpoint.tensor(name).clone()
        trained = float(weight[EXPERT_SLOT].float().norm())
        direction = means[layer] / means[layer].norm().clamp_min(1e-12)
        weight[EXPERT_SLOT] = (direction * (trained if trained > 0 else 1.0)).to(weight.dtype)
        rows[name] = weight.contiguous()
    return rows
