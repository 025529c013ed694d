"""Train one BAR domain expert: mid-training → SFT → RLVR with progressive unfreezing (DESIGN §2).

Work happens in a hidden ``.<out>.partial`` directory beside the output: each finished stage is a
complete checkpoint under ``stages/<stage>``, and a stage in progress keeps trainer checkpoints under
``runs/<stage>``. Running the same command again resumes; only when every stage is done does the
expert appear at ``out`` (in one rename), as a Hugging Face checkpoint with ``bar_expert.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers
import trl
from transformers import AutoTokenizer, FlexOlmoForCausalLM

from bar_model.branch import init_anchor
from bar_model.card import EXPERT_CARD, STAGE_CARD, expert_card
from bar_model.checkpoint import on_main_process, read_config, write_json
from bar_model.domains import Domain, get_domain
from bar_model.durable import atomic_directory
from bar_model.freezing import StageFreeze, check_unchanged, fingerprint_frozen, pin_anchor_layers
from bar_model.recipe import ExpertRecipe, parse_stages
from bar_model.stages import mixed_sft_examples, train_chat, train_language_model, train_rl
from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint
from protocol.layout import STAGES

log = logging.getLogger(__name__)
TRACKER_LOGS = "tracker-logs"  # <expert>/tracker-logs/<stage>/: what report_to's trackers wrote locally


def resolve_anchor(anchor_dir: Path, partial: Path, base_dir: Path | None) -> Path:
    """The 2-expert training checkpoint: ``anchor_dir`` itself, or a branch built from a dense anchor."""
    config = read_config(anchor_dir)
    if config.get("model_type") == "flex_olmo":
        if config.get("num_experts") != 2:
            raise BarFedError(
                "WRONG_ARCHITECTURE",
                f"{anchor_dir} is a {config.get('num_experts')}-expert FlexOlmo model; experts branch from "
                "the 2-expert anchor made by `barfed model init-anchor`, not from a merged release.",
            )
        if base_dir is not None:
            raise BarFedError(
                "BAD_ARGUMENTS", "--base only applies to a dense anchor; this anchor is already branched."
            )
        return anchor_dir
    branch = partial / "branch"
    if not branch.exists():
        on_main_process(init_anchor, anchor_dir, branch, base_dir)  # refuses non-OLMo-2 input clearly
    return branch


def _link(src: str | Path, dst: str | Path) -> None:
    """Copy a file by hard link where possible (no bytes copied), else by copying."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _run_stage(
    stage: str,
    model,
    tokenizer,
    domain,
    recipe: ExpertRecipe,
    work: Path,
    progress: bool,
    on_step: Callable[[str, int, int], None] | None,
) -> dict:
    pin_anchor_layers(model, recipe.anchor_layers)
    freeze = StageFreeze(model, stage, getattr(recipe, stage).shared_lr_scale, recipe.anchor_layers)
    before = fingerprint_frozen(model, stage, recipe.anchor_layers)
    common = {
        "seed": recipe.seed,
        "freeze": freeze,
        "z_loss_coef": recipe.router_z_loss,
        "progress": progress,
        "on_step": functools.partial(on_step, stage) if on_step else None,
    }
    try:
        if stage == "mid":
            texts = domain.mid_texts(recipe.mid.documents, recipe.seed)
            summary = train_language_model(model, tokenizer, texts, recipe.mid, work, **common)
        elif stage == "sft":
            examples = mixed_sft_examples(
                domain, get_domain("general"), recipe.sft.examples, recipe.sft.general_mix, recipe.seed
            )
            summary = train_chat(model, tokenizer, examples, recipe.sft, work, **common)
        else:
            examples = domain.rl(recipe.rl.prompts, recipe.seed)
            summary = train_rl(model, tokenizer, domain, examples, recipe.rl, work, **common)
    finally:
        freeze.remove()
    check_unchanged(before, fingerprint_frozen(model, stage, recipe.anchor_layers), stage)
    return summary


def train_expert(
    anchor_dir: str | Path,
    domain_name: str | Domain,
    stages: str | list[str],
    out_dir: str | Path,
    recipe: ExpertRecipe,
    *,
    base_dir: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Train (or resume training) the expert for ``domain_name`` and publish it at ``out_dir``.

    ``on_step(stage, step, total)`` hears of each stage as it starts (step 0) and after each of its steps, on the
    main process: a stage can take many minutes, and a caller may want to show how far it is."""
    domain = domain_name if isinstance(domain_name, Domain) else get_domain(domain_name)
    stages = parse_stages(stages) if isinstance(stages, str) else parse_stages(",".join(stages))
    anchor_dir, out_dir = Path(anchor_dir), Path(out_dir)
    if out_dir.exists():
        raise BarFedError("OUTPUT_EXISTS", f"{out_dir} already exists; choose another --out or remove it.")
    layers = read_config(anchor_dir)["num_hidden_layers"]
    if recipe.anchor_layers >= layers:
        raise BarFedError(
            "BAD_RECIPE",
            f"the recipe keeps the anchor's FFN in anchor_layers = {recipe.anchor_layers} layers but the anchor "
            f"has {layers}, which leaves no layer for the expert; set anchor_layers below {layers}.",
        )
    partial = out_dir.parent / f".{out_dir.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    anchor = resolve_anchor(anchor_dir, partial, Path(base_dir) if base_dir else None)
    run = {
        "domain": domain.name,
        "stages": stages,
        "recipe_digest": recipe.digest(),
        "anchor_fingerprint": anchor_fingerprint(anchor),
    }
    run_file = partial / "run.json"
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        if previous != run:
            raise BarFedError(
                "RESUME_MISMATCH",
                f"{partial} holds an interrupted run with other settings ({previous}); rerun with the same "
                "anchor, domain, stages and recipe to resume, or delete that directory to start over.",
            )
        log.info("resuming interrupted run in %s", partial)
    else:
        on_main_process(write_json, run_file, run)

    dtype = getattr(torch, read_config(anchor).get("dtype") or "float32")
    summaries: dict[str, dict] = {}
    previous_dir = anchor
    for stage in stages:
        stage_dir = partial / "stages" / stage
        if stage_dir.exists():
            summaries[stage] = json.loads((stage_dir / STAGE_CARD).read_text())
            log.info("stage %s already done", stage)
            previous_dir = stage_dir
            continue
        log.info("stage %s: training %s expert from %s", stage, domain.name, previous_dir)
        if on_step is not None:
            on_main_process(on_step, stage, 0, getattr(recipe, stage).steps)
        model = FlexOlmoForCausalLM.from_pretrained(previous_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(previous_dir)
        work = partial / "runs" / stage
        summary = _run_stage(stage, model, tokenizer, domain, recipe, work, progress, on_step)
        summaries[stage] = summary
        on_main_process(_save_stage, model.to(dtype), tokenizer, stage_dir, summary)
        on_main_process(_keep_tracker_logs, work, partial / TRACKER_LOGS / stage)
        on_main_process(shutil.rmtree, work, ignore_errors=True)
        previous_dir = stage_dir
        log.info("stage %s done in %.1fs", stage, summary["wall_s"])

    card = {
        "domain": domain.name,
        "stages": stages,
        "stage_summaries": summaries,
        **_lineage(anchor_dir, stages),
        "recipe": recipe.model_dump(),
        "anchor_fingerprint": run["anchor_fingerprint"],
        "anchor": str(anchor_dir.resolve()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
    }
    on_main_process(_publish, previous_dir, partial, out_dir, card)
    return out_dir


def _lineage(start: Path, stages: list[str]) -> dict:
    """Training further from an earlier expert: the new one carries every part its parent's stages changed, so
    it declares their stages too (a package ships exactly what the declared stages change), and names its parent."""
    if not (start / EXPERT_CARD).is_file():
        return {}
    parent = expert_card(start)
    if parent["anchor_fingerprint"] != anchor_fingerprint(start):
        raise BarFedError("ANCHOR_MISMATCH", f"{start} was not trained on the anchor its card names.")
    union = [stage for stage in STAGES if stage in parent["stages"] or stage in stages]
    return {"stages": union, "improved_from": {"created_at": parent["created_at"], "stages": parent["stages"]}}


def _save_stage(model, tokenizer, stage_dir: Path, summary: dict) -> None:
    with atomic_directory(stage_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / STAGE_CARD, summary)


def _keep_tracker_logs(work: Path, keep: Path) -> None:
    """A tracker's local files (TensorBoard's ``runs/`` under the stage's work dir) outlive the stage's checkpoints."""
    if (work / "runs").is_dir():
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(keep, ignore_errors=True)
        shutil.move(work / "runs", keep)


def _publish(last_stage: Path, partial: Path, out_dir: Path, card: dict) -> None:
    """The last stage's model plus every stage's checkpoint (and trackers' logs), as one directory, in one rename."""
    with atomic_directory(out_dir) as staging:
        for item in last_stage.iterdir():
            if item.is_file() and item.name != STAGE_CARD:
                _link(item, staging / item.name)
        shutil.copytree(partial / "stages", staging / "stages", copy_function=_link)
        if (partial / TRACKER_LOGS).is_dir():
            shutil.copytree(partial / TRACKER_LOGS, staging / TRACKER_LOGS, copy_function=_link)
        write_json(staging / EXPERT_CARD, card)
    shutil.rmtree(partial, ignore_errors=True)
