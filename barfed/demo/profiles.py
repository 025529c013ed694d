"""What the demo trains: the four organizations and their domains, and the two profiles (the full run, on tiny
models that learn, and --quick, on micro models that only show the flow)."""

from __future__ import annotations

from dataclasses import dataclass

from bar_model.recipe import load_expert_recipe

ORGS = {"acme-labs": "math", "initech": "code", "globex": "tool_use", "umbrella": "safety"}
IMPROVED_ORG = "initech"


@dataclass(frozen=True)
class Profile:
    """What the demo trains with: the full run (tiny models that learn) or --quick (micro models, a smoke run)."""

    name: str
    base_recipe: str
    expert_recipes: dict[str, str]  # domain -> the recipe its organization trains with, as each org chooses its own
    improved_recipe: str
    router_recipe: str
    eval_examples: int
    shipped_anchor: bool
    parallel: int  # organizations training at once (each its own process, one thread each)
    scores_note: str = ""  # what to make of the score table, where it needs saying


# Each organization sizes its own training, as real ones do: math learns slowest on the tiny anchor and gets the
# longest recipe, safety the shortest; code's v1 is a first version, its v2 trains it further.
FULL = Profile(
    "demo",
    "tiny",
    {"math": "demo-math", "code": "demo-code", "tool_use": "demo-tool-use", "safety": "demo-safety"},
    "demo-code-v2",
    "demo",
    100,
    True,
    2,
)
QUICK = Profile(
    "quick",
    "micro",
    dict.fromkeys(ORGS.values(), "micro"),
    "micro-v2",
    "micro",
    8,
    False,
    4,
    "--quick trains micro models for a few steps to show the flow, not to learn: scores near 0 are expected; "
    "`barfed demo` (without --quick) trains models that learn.",
)


def recipe_summary(name: str) -> str:
    """``recipe demo-math: mid 300, SFT 1200, RL 20 steps``: what an organization's training costs, in steps."""
    recipe = load_expert_recipe(name)
    return f"recipe {name}: mid {recipe.mid.steps}, SFT {recipe.sft.steps}, RL {recipe.rl.steps} steps"
