"""The router's calibration sample: the same slice of each slot's SFT data wherever it is drawn.

An organization draws its domain's slice on its own node and ships it in its package; the coordinator draws
the anchor slot's (general data) when it builds a release; `train_router` draws every slot's when it is given
no packages. One definition keeps the three one sample. It imports no training library, so
`barfed node package` does not pay for torch's compiler stack, trl and datasets (ten seconds on a small machine).
"""

from __future__ import annotations

import random

from bar_model.domains import Example, get_domain
from bar_model.recipe import RouterRecipe
from protocol.layout import ANCHOR_SLOT


def sft_pool_size(slot: str, recipe: RouterRecipe) -> int:
    """How many SFT examples the slot's expert (or, for the anchor, its general SFT) trained on."""
    return recipe.general_pool if slot in (ANCHOR_SLOT, "general") else recipe.domain_pool


def slot_sample(slot: str, recipe: RouterRecipe) -> list[Example]:
    """The recipe's fraction (or count) of one slot's SFT data, in the order it is drawn."""
    domain = get_domain("general" if slot == ANCHOR_SLOT else slot)
    pool = sft_pool_size(slot, recipe)
    count = recipe.examples_per_domain or max(1, round(recipe.fraction * pool))
    # Same seed as the expert's own SFT data, so this is a sample *of* it, drawn per slot.
    data = domain.sft(pool, recipe.seed)
    return random.Random(f"router/{slot}/{recipe.seed}").sample(data, min(count, len(data)))


def stratified_sample(slots: list[str], recipe: RouterRecipe) -> list[Example]:
    """Every slot's sample, shuffled together (in the order `train_router` shuffles them)."""
    examples = [example for slot in slots for example in slot_sample(slot, recipe)]
    random.Random(recipe.seed).shuffle(examples)
    return examples
