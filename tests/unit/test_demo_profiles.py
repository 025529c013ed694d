"""The demo's profiles name recipes that exist and agree with each other (the full run is too long for a test)."""

from __future__ import annotations

import pytest

from bar_model.recipe import load_expert_recipe, load_router_recipe
from barfed.demo import FULL, ORGS, QUICK


@pytest.mark.parametrize("profile", [FULL, QUICK], ids=["full", "quick"])
def test_every_organization_has_a_recipe_that_loads(profile):
    assert set(profile.expert_recipes) == set(ORGS.values())
    for name in [*profile.expert_recipes.values(), profile.improved_recipe]:
        load_expert_recipe(name)
    load_router_recipe(profile.router_recipe)


def test_full_recipes_draw_the_domain_pool_the_router_samples_from():
    """The calibration fraction is of the router recipe's ``domain_pool``: each expert's SFT must draw that many."""
    pool = load_router_recipe(FULL.router_recipe).domain_pool
    for name in [*FULL.expert_recipes.values(), FULL.improved_recipe]:
        sft = load_expert_recipe(name).sft
        assert round(sft.examples * (1 - sft.general_mix)) == pool, name
