"""The baselines BAR is measured against (besides the anchor and each expert alone).

- weight average: every tensor of the N expert checkpoints averaged into one 2-expert model (a dense merge);
- multitask re-training: one branch trained through the same three stages on all domains' data together,
  with N times the steps and data of a single expert (what re-training everything for an update costs);
- BTX-style: the merged experts without the anchor slot, router trained the same way.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

from bar_model.checkpoint import SafetensorsCheckpoint, ShardedSafetensorsWriter, copy_tokenizer_files
from bar_model.domains import Domain, Example, get_domain
from bar_model.durable import atomic_directory
from bar_model.expert import train_expert
from bar_model.merge import MERGE_SHARD_BYTES, merge_experts, open_expert
from bar_model.recipe import ExpertRecipe, RouterRecipe
from bar_model.router import train_router


class MixtureDomain(Domain):
    """All of ``domains`` as one: data drawn from each in turn, every example scored by its own domain."""

    def __init__(self, names: list[str]) -> None:
        self.parts = [get_domain(n) for n in names]
        self.name = "mix:" + "+".join(names)
        self.description = f"multitask mixture of {', '.join(names)}"
        self.max_new_tokens = max(d.max_new_tokens for d in self.parts)

    def sample(self, rng: random.Random) -> Example:  # not used: every split is drawn by the parts
        return rng.choice(self.parts).sample(rng)

    def score(self, example: Example, completion: str) -> float:
        return get_domain(example.domain).score(example, completion)

    def reward(self, example: Example, completion: str) -> float:
        return get_domain(example.domain).reward(example, completion)

    def _interleave(self, per_part: list[list]) -> list:
        mixed = [item for group in zip(*per_part, strict=False) for item in group]
        random.Random(self.name).shuffle(mixed)
        return mixed

    def _split(self, n: int) -> list[int]:
        return [n // len(self.parts) + (i < n % len(self.parts)) for i in range(len(self.parts))]

    def mid_texts(self, n: int, seed: int = 0) -> list[str]:
        return self._interleave([d.mid_texts(k, seed) for d, k in zip(self.parts, self._split(n), strict=True)])

    def sft(self, n: int, seed: int = 0) -> list[Example]:
        return self._interleave([d.sft(k, seed) for d, k in zip(self.parts, self._split(n), strict=True)])

    def rl(self, n: int, seed: int = 0) -> list[Example]:
        return self._interleave([d.rl(k, seed) for d, k in zip(self.parts, self._split(n), strict=True)])


def scaled_recipe(recipe: ExpertRecipe, factor: int) -> ExpertRecipe:
    """The expert recipe with ``factor`` times the steps and data of every stage."""
    update = {}
    for stage, size_field in (("mid", "documents"), ("sft", "examples"), ("rl", "prompts")):
        loop = getattr(recipe, stage)
        update[stage] = loop.model_copy(
            update={"steps": loop.steps * factor, size_field: getattr(loop, size_field) * factor}
        )
    return recipe.model_copy(update=update)


def train_multitask(
    anchor_dir: str | Path, domains: list[str], out_dir: str | Path, recipe: ExpertRecipe, *, progress: bool = True
) -> Path:
    """One branch through mid, SFT and RL on every domain at once, with len(domains)× the budget."""
    mixture = MixtureDomain(domains)
    return train_expert(
        anchor_dir, mixture, "mid,sft,rl", out_dir, scaled_recipe(recipe, len(domains)), progress=progress
    )


def weight_average(anchor_dir: str | Path, expert_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Every tensor averaged over the experts (packages filled from the anchor): one 2-expert model."""
    anchor_dir = Path(anchor_dir)
    anchor = SafetensorsCheckpoint(anchor_dir)
    experts = [open_expert(d) for d in expert_dirs]
    with atomic_directory(out_dir) as staging:
        writer = ShardedSafetensorsWriter(staging, MERGE_SHARD_BYTES)
        for key in anchor:
            total = torch.zeros(anchor.shape(key), dtype=torch.float32)
            for expert in experts:
                total += expert.tensor(key, anchor).float()
            writer.add(key, (total / len(experts)).to(anchor.tensor(key).dtype))
        writer.close()
        for name in ("config.json",):
            (staging / name).write_bytes((anchor_dir / name).read_bytes())
        copy_tokenizer_files(anchor_dir, staging)
    return Path(out_dir)


def build_btx(
    anchor_dir: str | Path,
    expert_dirs: list[str | Path],
    out_dir: str | Path,
    recipe: RouterRecipe,
    *,
    progress: bool = True,
) -> Path:
    """BTX-style mixture: experts only (no anchor slot), router trained exactly like BAR's."""
    out_dir = Path(out_dir)
    unrouted = out_dir.parent / f".{out_dir.name}.unrouted"
    merge_experts(anchor_dir, expert_dirs, unrouted, anchor_slot=False)
    try:
        return train_router(unrouted, out_dir, recipe, progress=progress)
    finally:
        shutil.rmtree(unrouted, ignore_errors=True)
