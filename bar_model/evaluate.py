"""Per-domain scores of any checkpoint (dense, 2-expert, merged): greedy answers to held-out problems.

The model only ever sees the rendered chat prompt; the domain's exact scorer judges the completion.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bar_model.checkpoint import SafetensorsCheckpoint, read_config
from bar_model.domains import Example, get_domain
from bar_model.tokenizer import render_prompt
from protocol.errors import BarFedError

SUPPORTED_MODEL_TYPES = ("olmo2", "flex_olmo")


def load_model(directory: str | Path, dtype: torch.dtype = torch.float32):
    """Load a checkpoint with stock `transformers` (safetensors only), after checking what it is."""
    directory = Path(directory)
    config = read_config(directory)
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise BarFedError(
            "WRONG_ARCHITECTURE",
            f"{directory} holds a {config.get('model_type') or 'unknown'} model; BAR works with "
            f"{' and '.join(SUPPORTED_MODEL_TYPES)} checkpoints.",
        )
    SafetensorsCheckpoint(directory)  # refuses pickle-only directories with a clear error
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model.eval()
    return model, tokenizer


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy completions for user prompts, batched by length with left padding."""
    model.eval()
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    rendered = [render_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(rendered[i]))
    completions: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([rendered[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(idx, texts, strict=True):
            completions[i] = text
    return completions


def score_examples(model, tokenizer, domain_name: str, examples: list[Example]) -> float:
    """Score (0-100) of greedy answers to ``examples``, judged by the domain's exact scorer."""
    domain = get_domain(domain_name)
    if not examples:
        raise BarFedError("NO_EVAL_DATA", f"no {domain_name} examples to score.")
    outputs = generate(model, tokenizer, [e.prompt for e in examples], domain.max_new_tokens)
    correct = sum(domain.score(e, out) for e, out in zip(examples, outputs, strict=True))
    return round(100.0 * correct / len(examples), 1)


def evaluate(model, tokenizer, domains: list[str], n: int = 100, seed: int = 0) -> dict[str, float]:
    """Score (0-100) on ``n`` held-out problems of each domain, plus their ``overall`` mean."""
    scores: dict[str, float] = {}
    for name in domains:
        scores[name] = score_examples(model, tokenizer, name, get_domain(name).eval_set(n, seed))
    if scores:
        scores["overall"] = round(sum(scores.values()) / len(scores), 1)
    return scores
