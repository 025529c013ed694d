"""Every hyper-parameter of building a base and training an expert, read from TOML files.

Named recipes ship in ``bar_model/recipes/`` (``base-<size>.toml``, ``expert-<size>.toml``); any other
file can be passed by path. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol.errors import BarFedError

RECIPE_DIR = Path(__file__).parent / "recipes"
STAGE_ORDER = ("mid", "sft", "rl")
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}  # → modules
Tracker = Literal["tensorboard", "mlflow", "wandb"]


def installed_trackers(report_to: list[str]) -> list[str]:
    """``report_to`` itself, or TRACKER_NOT_INSTALLED for the first tracker whose package is missing (checked
    without importing it)."""
    for tracker in report_to:
        if not any(importlib.util.find_spec(module) for module in TRACKERS[tracker]):
            raise BarFedError(
                "TRACKER_NOT_INSTALLED",
                f"report_to names {tracker}, which is not installed; `pip install {tracker}`, or drop it.",
            )
    return report_to


# Experiment trackers the Trainer reports to: how a run is watched, not what it trains, so they are left out of a
# recipe's dump (its digest, the expert card) and a node may override them (BARFED_NODE_REPORT_TO).
Trackers = Annotated[list[Tracker], AfterValidator(installed_trackers)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSize(_Strict):
    """Shape of the dense Olmo2 base; the vocabulary size comes from the tokenizer."""

    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    max_position_embeddings: int = Field(default=512, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)


class TokenizerRecipe(_Strict):
    vocab_size: int = Field(default=2048, ge=300)
    texts_per_domain: int = Field(default=400, gt=0)


class LoopRecipe(_Strict):
    """What every training loop needs."""

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_length: int = Field(default=128, gt=8)
    save_steps: int = Field(default=100, gt=0)
    activation_checkpointing: bool = False  # trade compute for memory on large models
    shared_lr_scale: float = Field(default=1.0, ge=0, le=1, description="LR factor for tensors all experts share")
    report_to: Trackers = Field(default=[], exclude=True, description="experiment trackers; none by default")


class PretrainRecipe(LoopRecipe):
    documents: int = Field(gt=0)
    domain_text_share: float = Field(
        default=0.0, ge=0, lt=1, description="share of pretraining documents drawn from every domain's text"
    )


class AnchorSftRecipe(LoopRecipe):
    examples: int = Field(gt=0)


class BaseRecipe(_Strict):
    """How `barfed model build-base` makes the tiny base and its anchor."""

    name: str
    seed: int = 0
    model: ModelSize
    tokenizer: TokenizerRecipe = TokenizerRecipe()
    pretrain: PretrainRecipe
    anchor_sft: AnchorSftRecipe


class MidRecipe(LoopRecipe):
    documents: int = Field(gt=0)


class SftRecipe(LoopRecipe):
    examples: int = Field(gt=0)
    general_mix: float = Field(default=0.2, ge=0, lt=1, description="fraction of general SFT examples")


class RlRecipe(LoopRecipe):
    prompts: int = Field(gt=0)
    num_generations: int = Field(default=8, ge=2)
    max_completion_length: int = Field(default=48, gt=0)
    temperature: float = Field(default=1.0, gt=0)
    epsilon: float = Field(default=0.2, gt=0)
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"


class ExpertRecipe(_Strict):
    """How `barfed model train-expert` adapts one domain expert (DESIGN §2)."""

    name: str
    seed: int = 0
    router_z_loss: float = Field(default=0.001, ge=0)
    eval_examples: int = Field(default=100, gt=0)
    anchor_layers: int = Field(
        default=0,
        ge=0,
        description="leading layers whose domain FFN stays the anchor's, frozen in every stage; a merged "
        "model's router cannot tell domains apart from a token's first layer, so there it computes the anchor",
    )
    report_to: Trackers = Field(
        default=[], exclude=True, description="experiment trackers every stage reports to (tensorboard, mlflow, wandb)"
    )
    mid: MidRecipe
    sft: SftRecipe
    rl: RlRecipe

    @model_validator(mode="before")
    @classmethod
    def _stages_report(cls, data):
        """Each stage reports where the recipe does, unless its own table names its trackers (an unknown tracker is
        refused once, at the top)."""
        trackers = data.get("report_to") if isinstance(data, dict) else None
        if isinstance(trackers, list) and all(isinstance(t, str) and t in TRACKERS for t in trackers):
            data = {**data}
            for stage in STAGE_ORDER:
                if isinstance(data.get(stage), dict):
                    data[stage] = {"report_to": data["report_to"], **data[stage]}
        return data

    def reporting_to(self, report_to: list[str]) -> ExpertRecipe:
        """The same recipe with every stage reporting to ``report_to`` (validated, installed) instead."""
        try:  # the dump leaves trackers out, so every stage takes these
            return type(self).model_validate({**self.model_dump(), "report_to": report_to})
        except ValidationError:
            raise BarFedError(
                "UNKNOWN_TRACKER", f"report_to {report_to!r}: name trackers among {', '.join(TRACKERS)}, or none."
            ) from None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


class RouterRecipe(LoopRecipe):
    """How the coordinator trains a merged model's router (DESIGN §2, "Route")."""

    name: str
    seed: int = 0
    router_z_loss: float = Field(default=0.001, ge=0)
    fraction: float = Field(default=0.05, gt=0, le=1, description="share of each domain's SFT data sampled")
    examples_per_domain: int | None = Field(default=None, gt=0, description="overrides fraction when set")
    domain_pool: int = Field(gt=0, description="SFT examples each expert saw from its domain")
    general_pool: int = Field(gt=0, description="general SFT examples the anchor saw")
    top_k: int | None = Field(default=None, gt=0, description="experts per token; all of them when unset")
    norm_topk_prob: bool = Field(
        default=False, description="renormalise the top-k routing weights to sum to 1 (FlexOlmo's config flag)"
    )
    incremental_steps: int | None = Field(
        default=None,
        gt=0,
        description="step budget when a previous release fixes every unchanged expert's rows (default: steps)",
    )
    fit_steps: int = Field(
        default=0,
        ge=0,
        description="before training, fit each layer's rows to the mixtures the experts trained with (0: off)",
    )


def _load(kind: str, name_or_path: str | Path, model: type[_Strict]) -> _Strict:
    path = Path(name_or_path)
    if not path.suffix:  # a named recipe
        path = RECIPE_DIR / f"{kind}-{name_or_path}.toml"
    if not path.is_file():
        named = sorted(p.stem.removeprefix(f"{kind}-") for p in RECIPE_DIR.glob(f"{kind}-*.toml"))
        raise BarFedError(
            "RECIPE_NOT_FOUND",
            f"no {kind} recipe at {path}; pass a TOML file or one of the named recipes: {', '.join(named)}.",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return model.model_validate(data)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BarFedError("BAD_RECIPE", f"{path} is not valid TOML ({exc}); fix the file and retry.") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise BarFedError("BAD_RECIPE", f"{path} is not a valid {kind} recipe: {problems}.") from None


def load_base_recipe(name_or_path: str | Path = "tiny") -> BaseRecipe:
    return _load("base", name_or_path, BaseRecipe)  # type: ignore[return-value]


def load_expert_recipe(name_or_path: str | Path = "tiny") -> ExpertRecipe:
    return _load("expert", name_or_path, ExpertRecipe)  # type: ignore[return-value]


def load_router_recipe(name_or_path: str | Path = "tiny") -> RouterRecipe:
    return _load("router", name_or_path, RouterRecipe)  # type: ignore[return-value]


def parse_stages(text: str) -> list[str]:
    """``"mid,sft,rl"`` → stages, refusing unknown, repeated or out-of-order ones."""
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if not stages or unknown:
        raise BarFedError(
            "BAD_STAGES",
            f"unknown stage(s) {unknown or text!r}; give a comma-separated subset of {','.join(STAGE_ORDER)}.",
        )
    order = [STAGE_ORDER.index(s) for s in stages]
    if order != sorted(set(order)):
        raise BarFedError(
            "STAGES_OUT_OF_ORDER",
            f"stages {','.join(stages)} are repeated or out of order; BAR unfreezes progressively, "
            f"so list them in the order {','.join(STAGE_ORDER)} (mid is optional).",
        )
    return stages
