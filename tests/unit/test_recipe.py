import pytest

from bar_model.recipe import RECIPE_DIR, load_base_recipe, load_expert_recipe, load_router_recipe, parse_stages
from protocol.errors import BarFedError


def test_named_recipes_load():
    assert load_base_recipe("tiny").model.hidden_size > 0
    expert = load_expert_recipe("tiny")
    assert expert.router_z_loss == 0.001
    assert 0 <= expert.sft.general_mix < 1


@pytest.mark.parametrize("path", sorted(RECIPE_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_is_valid(path):
    load = {"base": load_base_recipe, "expert": load_expert_recipe, "router": load_router_recipe}
    kind, name = path.stem.split("-", 1)
    assert load[kind](name).name == name


@pytest.mark.parametrize(
    "text",
    [
        "name = 'x'\n[mid]\nsteps = 1\n",  # missing sections and fields
        "this is not toml ===",
        "name = 'x'\nunknown_knob = 3\n",
    ],
)
def test_malformed_recipe_is_refused(tmp_path, text):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    with pytest.raises(BarFedError) as err:
        load_expert_recipe(path)
    assert err.value.code == "BAD_RECIPE"
    assert str(path) in err.value.message


def test_negative_learning_rate_is_refused(tmp_path):
    text = (load_expert_recipe.__globals__["RECIPE_DIR"] / "expert-micro.toml").read_text()
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("learning_rate = 1e-2", "learning_rate = -1", 1))
    with pytest.raises(BarFedError) as err:
        load_expert_recipe(path)
    assert err.value.code == "BAD_RECIPE" and "learning_rate" in err.value.message


def test_unknown_named_recipe():
    with pytest.raises(BarFedError) as err:
        load_expert_recipe("enormous")
    assert err.value.code == "RECIPE_NOT_FOUND" and "tiny" in err.value.message


def test_stages_parse_in_order():
    assert parse_stages("mid,sft,rl") == ["mid", "sft", "rl"]
    assert parse_stages("sft, rl") == ["sft", "rl"]


@pytest.mark.parametrize(
    "text,code",
    [
        ("sft,mid", "STAGES_OUT_OF_ORDER"),
        ("sft,sft", "STAGES_OUT_OF_ORDER"),
        ("mid,dpo", "BAD_STAGES"),
        ("", "BAD_STAGES"),
    ],
)
def test_bad_stages(text, code):
    with pytest.raises(BarFedError) as err:
        parse_stages(text)
    assert err.value.code == code


def test_pretraining_corpus_mixes_a_share_of_every_domain():
    from bar_model.base import pretraining_corpus
    from bar_model.domains import domain_names, get_domain

    others = len(domain_names()) - 1
    general_only = pretraining_corpus(100 * others, 0.0, seed=0)
    mixed = pretraining_corpus(100 * others, 0.1, seed=0)
    assert len(general_only) == len(mixed) == 100 * others
    assert pretraining_corpus(100 * others, 0.1, seed=0) == mixed, "deterministic for a seed"
    math_texts = set(get_domain("math").mid_texts(10, 7919))
    assert math_texts <= set(mixed) and not math_texts & set(general_only)


def test_an_existing_base_built_with_another_recipe_is_refused(micro):
    from bar_model.base import build_base

    recipe = load_base_recipe("micro")
    other = recipe.model_copy(update={"pretrain": recipe.pretrain.model_copy(update={"domain_text_share": 0.5})})
    with pytest.raises(BarFedError) as err:
        build_base(other, micro["root"], progress=False)
    assert err.value.code == "BASE_RECIPE_MISMATCH"
    assert build_base(recipe, micro["root"], progress=False) == (micro["base"], micro["anchor"])
