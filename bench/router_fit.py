"""Benchmark: why a release of many parametric experts loses them, and what the router fit gives back.

The experts are bench/many_domains.py's (trained there once, under its --work; this command trains any that are
missing). For each N, the first N are merged once and router-many trains the router three ways: the LM loss alone
(``fit_steps = 0``, as before the fit), the LM loss alone on four times the calibration sample for twice the steps
(is the sample too small?), and router-many as it is (rows fitted to the experts' own mixtures first,
``bar_model/router_fit.py``). Each release and each expert alone answer the same held-out problems; dense routing.

Router capacity: per layer, the best a linear map can do at naming a token's slot (its domain's expert; the anchor
for general data) from the hidden state entering that layer's FFN under the anchor (a multinomial logistic probe
with a bias on standardised features, fitted on the calibration sample, scored on held-out problems). A router
row is a linear map without a bias, so this bounds how well any router of this shape can tell domains apart.

    .venv/bin/python bench/router_fit.py --n 16        # 11 min on 2 CPU cores once the experts exist (2026-12-06)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bar_model.branch import init_anchor  # noqa: E402
from bar_model.calibration import slot_sample  # noqa: E402
from bar_model.domains import get_domain  # noqa: E402
from bar_model.evaluate import evaluate, load_model  # noqa: E402
from bar_model.merge import merge_card, merge_experts  # noqa: E402
from bar_model.recipe import load_expert_recipe, load_router_recipe  # noqa: E402
from bar_model.router import router_card, train_router  # noqa: E402
from bar_model.router_fit import layer_inputs  # noqa: E402
from bar_model.tokenizer import render_prompt  # noqa: E402
from bench.bar_products import Job, ensure, expert_job, run_jobs  # noqa: E402
from bench.many_domains import ANCHOR, domain_order  # noqa: E402
from bench.report import machine_line  # noqa: E402
from protocol.layout import ANCHOR_SLOT  # noqa: E402

PROBE_STEPS = 500


def retention(scores: dict, alone: dict) -> dict:
    kept = [scores[d] / alone[d] for d in alone if alone[d]]
    return {
        "learned": len(kept),
        "median": statistics.median(kept),
        "lowest": min(kept),
        "at_least_90": sum(k >= 0.9 for k in kept),
        "general": scores["general"],
    }


def _tokens(model, tokenizer, labelled: list[tuple[int, str, str]], layer: int):
    """Hidden states entering ``layer``'s FFN, each token's slot, and whether it is a response token."""
    states = layer_inputs(model, tokenizer, [prompt + response for _, prompt, response in labelled], layer)
    labels, response = [], []
    for (slot, prompt, _), hidden in zip(labelled, states, strict=True):
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels.append(torch.full((len(hidden),), slot))
        response.append(torch.arange(len(hidden)) >= prompt_tokens)
    return torch.cat(states), torch.cat(labels), torch.cat(response)


def router_capacity(merged: Path, slots: list[str], recipe, eval_examples: int) -> list[dict]:
    """Per layer: held-out accuracy of the best linear probe naming a token's slot, on prompt and response tokens."""
    model, tokenizer = load_model(merged)
    anchor = slots.index(ANCHOR_SLOT)
    for block in model.model.layers:  # route every token to the anchor: the hidden states the anchor computes
        block.mlp.gate.weight.data.zero_()
        block.mlp.gate.weight.data[anchor, 0] = 1e4
        block.mlp.gate.top_k = 1

    def labelled(examples_of) -> list[tuple[int, str, str]]:
        return [
            (i, render_prompt(tokenizer, e.prompt), e.response + tokenizer.eos_token)
            for i, slot in enumerate(slots)
            for e in examples_of(slot)
        ]

    train = labelled(lambda slot: slot_sample(slot, recipe))
    held_out = labelled(lambda slot: get_domain("general" if slot == ANCHOR_SLOT else slot).eval_set(eval_examples))
    layers = []
    for layer in range(len(model.model.layers)):
        x, y, _ = _tokens(model, tokenizer, train, layer)
        xt, yt, response = _tokens(model, tokenizer, held_out, layer)
        mean, std = x.mean(0), x.std(0) + 1e-6
        weight = torch.zeros(len(slots), x.shape[1], requires_grad=True)
        bias = torch.zeros(len(slots), requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
        for _ in range(PROBE_STEPS):
            optimizer.zero_grad()
            F.cross_entropy((x - mean) / std @ weight.T + bias, y).backward()
            optimizer.step()
        with torch.no_grad():
            right = ((xt - mean) / std @ weight.T + bias).argmax(-1) == yt
        layers.append(
            {"prompt": right[~response].float().mean().item(), "response": right[response].float().mean().item()}
        )
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "bench-many")
    parser.add_argument("--n", default="16", help="federation sizes, e.g. 16,32")
    parser.add_argument("--eval-examples", type=int, default=50, help="held-out problems per domain")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    sizes = [int(n) for n in args.n.split(",")]
    expert_recipe, fitted = load_expert_recipe("many"), load_router_recipe("many")
    plain = fitted.model_copy(update={"fit_steps": 0})
    larger = plain.model_copy(update={"examples_per_domain": 128, "steps": 2 * plain.steps})
    routers = [
        (f"LM loss, {plain.steps} steps, {plain.examples_per_domain} per domain", "plain", plain),
        (f"LM loss, {larger.steps} steps, {larger.examples_per_domain} per domain", "larger", larger),
        (f"fit {fitted.fit_steps} steps, then as the first", "fitted", fitted),
    ]
    work = args.work
    branch = ensure(work / "anchor-2x", lambda: init_anchor(ANCHOR / "anchor", work / "anchor-2x", ANCHOR / "base"))
    names = domain_order()[: max(sizes)]
    experts = {n: work / "experts" / expert_recipe.name / n for n in names}
    run_jobs({n: Job(expert_job, (branch, n, experts[n], expert_recipe)) for n in names}, 2)
    alone_path = work / "router_fit" / f"alone-{args.eval_examples}.json"
    alone = json.loads(alone_path.read_text()) if alone_path.is_file() else {}
    for name in names:
        if name not in alone:
            model, tokenizer = load_model(experts[name])
            alone[name] = evaluate(model, tokenizer, [name], args.eval_examples)[name]
    alone_path.parent.mkdir(parents=True, exist_ok=True)
    alone_path.write_text(json.dumps(alone))
    rows, capacity = [], []
    for n in sizes:
        merged = work / "router_fit" / f"merged-{n}"
        ensure(merged, lambda n=n, merged=merged: merge_experts(branch, [experts[e] for e in names[:n]], merged))
        for label, key, recipe in routers:
            out = work / "router_fit" / f"routed-{n}-{key}"
            ensure(out, lambda m=merged, out=out, recipe=recipe: train_router(m, out, recipe, progress=False), recipe)
            model, tokenizer = load_model(out)
            scores = evaluate(model, tokenizer, [*names[:n], "general"], args.eval_examples)
            r = retention(scores, {d: alone[d] for d in names[:n]})
            rows.append(
                f"| {n} | {label} | {r['learned']}/{n} | {r['lowest']:.0%} | {r['median']:.0%} | {r['at_least_90']} "
                f"| {r['general']:g} | {router_card(out)['wall_s']:.0f} |"
            )
            print(rows[-1], flush=True)
        probe = router_capacity(merged, merge_card(merged)["slots"], plain, args.eval_examples)
        for layer, accuracy in enumerate(probe):
            capacity.append(f"| {n} | {layer} | {accuracy['prompt']:.0%} | {accuracy['response']:.0%} |")
            print(capacity[-1], flush=True)
    minutes = (time.perf_counter() - started) / 60
    lines = [
        f"Command: `.venv/bin/python bench/router_fit.py --n {args.n}`  ",
        f"Machine: {machine_line()}; {args.eval_examples} held-out problems per domain, dense routing; "
        f"{minutes:.0f} minutes for this run.",
        "",
        "| N | router | learned | retention: lowest | median | ≥ 90% | general | router wall s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Router capacity: held-out accuracy of a linear probe naming a token's slot among N + 1 (chance "
        f"1/(N + 1)), {args.eval_examples} problems per slot:",
        "",
        "| N | layer | prompt tokens | response tokens |",
        "|---|---|---|---|",
        *capacity,
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
