"""Experiment tracking: a recipe's ``report_to`` (or the node's BARFED_NODE_REPORT_TO) reaches the Trainer, whose
TensorBoard event files then hold the run's loss; a tracker that is unknown or not installed is refused in one line;
and tracking changes neither what a recipe trains nor its digest. The Trainer prints no log dicts, bar or no bar."""

from __future__ import annotations

import sys

import pytest

from bar_model.recipe import RECIPE_DIR, load_expert_recipe
from contributor_node.settings import load_node_settings, write_config
from protocol.errors import BarFedError


@pytest.mark.slow
def test_a_loop_reports_its_loss_to_tensorboard_and_prints_no_log_dicts(micro, tmp_path, capfd):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bar_model.domains import get_domain
    from bar_model.stages import train_chat

    recipe = load_expert_recipe("micro").reporting_to(["tensorboard"])
    model = AutoModelForCausalLM.from_pretrained(micro["branch"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(micro["branch"])
    train_chat(model, tokenizer, get_domain("math").sft(8), recipe.sft, tmp_path, seed=0, progress=True)
    runs = [path.parent for path in tmp_path.glob("runs/*/events.out.tfevents.*")]  # under the loop's work dir
    assert runs, sorted(tmp_path.rglob("*"))
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    assert len(events.Scalars("train/loss")) >= 1
    out, err = capfd.readouterr()
    assert "'loss'" not in out + err and "'train_runtime'" not in out + err


def test_tracking_is_no_part_of_what_a_recipe_trains():
    recipe = load_expert_recipe("micro")
    tracked = recipe.reporting_to(["tensorboard"])
    assert (tracked.mid.report_to, tracked.sft.report_to, tracked.rl.report_to) == (["tensorboard"],) * 3
    assert recipe.report_to == recipe.sft.report_to == []  # no tracker unless asked
    assert tracked.model_dump() == recipe.model_dump() and tracked.digest() == recipe.digest()


def test_a_tracker_that_is_unknown_or_not_installed_is_refused(tmp_path, monkeypatch):
    source = load_expert_recipe("micro")
    with pytest.raises(BarFedError) as refused:
        source.reporting_to(["tensorbored"])
    assert refused.value.code == "UNKNOWN_TRACKER"
    toml = tmp_path / "expert.toml"
    shipped = (RECIPE_DIR / "expert-micro.toml").read_text()
    toml.write_text(f'report_to = ["tensorbored"]\n{shipped}')
    with pytest.raises(BarFedError) as refused:
        load_expert_recipe(toml)
    assert refused.value.code == "BAD_RECIPE" and "report_to" in refused.value.message
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed, wherever this runs
    toml.write_text(f'report_to = ["wandb"]\n{shipped}')
    with pytest.raises(BarFedError) as refused:
        load_expert_recipe(toml)
    assert refused.value.code == "TRACKER_NOT_INSTALLED" and "pip install wandb" in refused.value.message
    assert "\n" not in refused.value.message


def test_the_node_setting_names_trackers_or_is_refused(tmp_path, monkeypatch):
    write_config(tmp_path, {"org_id": "org", "service_address": "a:1", "enroll_address": "a:2"})
    assert load_node_settings(tmp_path).report_to is None  # the recipe's, then
    monkeypatch.setenv("BARFED_NODE_REPORT_TO", "tensorboard, mlflow")
    assert load_node_settings(tmp_path).report_to == ["tensorboard", "mlflow"]
    monkeypatch.setenv("BARFED_NODE_REPORT_TO", "")
    assert load_node_settings(tmp_path).report_to == []  # none, whatever the recipe says
    monkeypatch.setenv("BARFED_NODE_REPORT_TO", "tensorbored")
    with pytest.raises(BarFedError) as refused:
        load_node_settings(tmp_path)
    assert refused.value.code == "BAD_NODE_CONFIG" and "BARFED_NODE_REPORT_TO" in refused.value.message
