"""The user's side: `barfed pull` as a user runs it, then stock transformers and one question per domain."""

from __future__ import annotations

import subprocess
from pathlib import Path

from barfed.demo.commands import barfed, failure


def pull(api: str, ca: Path, token: str, release_key: Path, target: Path) -> None:
    """`barfed pull stable` into ``target`` (skipped once it is there), its output in ``pull.log`` beside it."""
    if target.is_dir():
        return
    command = barfed("pull", "stable", "--to", str(target), "--api", api)
    command += ["--ca", str(ca), "--token", token, "--coordinator-key", str(release_key)]
    log = target.parent / "pull.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise failure("barfed pull", log.read_text(errors="replace"), code, "PULL_FAILED", log)


def ask(model_dir: Path, domains: list[str]) -> list[str]:
    """Load the pulled release as any user would (stock transformers) and answer one held-out prompt per domain."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # the ML stack loads only once a user asks

    from bar_model.domains import get_domain
    from bar_model.evaluate import generate

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lines = []
    for domain in domains:
        example = get_domain(domain).eval_set(1, seed=7)[0]
        answer = generate(model, tokenizer, [example.prompt], get_domain(domain).max_new_tokens)[0]
        verdict = "right" if get_domain(domain).score(example, answer) else "wrong"
        lines.append(f"{domain}: {_short(example.prompt)} → {_short(answer)} ({verdict})")
    return lines


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
