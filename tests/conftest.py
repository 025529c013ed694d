"""Shared fixtures: a micro base, anchor and 2-expert branch built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def micro(tmp_path_factory) -> dict[str, Path]:
    """base/ and anchor/ (dense Olmo2) and branch/ (2-expert FlexOlmo) from the micro recipe."""
    from bar_model.base import build_base
    from bar_model.branch import init_anchor
    from bar_model.recipe import load_base_recipe

    root = tmp_path_factory.mktemp("micro")
    base, anchor = build_base(load_base_recipe("micro"), root, progress=False)
    branch = init_anchor(anchor, root / "branch", base)
    return {"root": root, "base": base, "anchor": anchor, "branch": branch}


@pytest.fixture(scope="session")
def micro_expert(micro, tmp_path_factory) -> Path:
    """A 2-expert checkpoint trained through mid, SFT and RL on the test domain (whose reward varies)."""
    from bar_model.expert import train_expert
    from bar_model.recipe import load_expert_recipe

    out = tmp_path_factory.mktemp("expert") / "vowels"
    train_expert(micro["branch"], "test-vowels", "mid,sft,rl", out, load_expert_recipe("micro"), progress=False)
    return out


def _register_test_domain() -> None:
    """A test-only domain whose RL reward varies even for an untrained model (share of vowels), so
    every GRPO step has a non-zero advantage and therefore a gradient."""
    import random

    from bar_model.domains import Domain, Example, domain_names, register

    class VowelDomain(Domain):
        name = "test-vowels"
        description = "test only: echo a word; RL reward is the share of vowels"
        max_new_tokens = 8

        def sample(self, rng: random.Random) -> Example:
            word = "".join(rng.choice("abcdefghijklmnop") for _ in range(6))
            return Example(f"Echo {word}", word, word)

        def score(self, example: Example, completion: str) -> float:
            return float(isinstance(completion, str) and completion.strip() == example.answer)

        def reward(self, example: Example, completion: str) -> float:
            if self.score(example, completion):
                return 1.0
            if not isinstance(completion, str):
                return 0.0
            return 0.5 * sum(ch in "aeiou" for ch in completion) / max(1, len(completion))

    if "test-vowels" not in domain_names():
        register(VowelDomain())


_register_test_domain()


@pytest.fixture(scope="session")
def micro_math(micro, tmp_path_factory) -> Path:
    """A second micro expert, for merges of two."""
    from bar_model.expert import train_expert
    from bar_model.recipe import load_expert_recipe

    out = tmp_path_factory.mktemp("expert") / "math"
    train_expert(micro["branch"], "math", "mid,sft,rl", out, load_expert_recipe("micro"), progress=False)
    return out


def _register_say_domains() -> None:
    """Test-only domains a micro expert learns in a second ("Say yes to 12" → "yes"), so release tests see
    real scores move: an expert scores 100 on its own word, a damaged one 0."""
    import random

    from bar_model.domains import Domain, Example, domain_names, register

    def make(word: str):
        class SayDomain(Domain):
            name = f"test-say-{word}"
            description = f"test only: answer {word}"
            max_new_tokens = 4

            def sample(self, rng: random.Random) -> Example:
                return Example(f"{word} " * 6 + str(rng.randint(0, 10**6)), word, word)

            def score(self, example: Example, completion: str) -> float:
                return float(isinstance(completion, str) and completion.strip() == example.answer)

        return SayDomain()

    for word in SAY_WORDS:
        if f"test-say-{word}" not in domain_names():
            register(make(word))


SAY_WORDS = ("yes", "no", "ok")
_register_say_domains()


def train_say_expert(branch: Path, word: str, out: Path, steps: int = 60, learning_rate: float = 3e-3) -> Path:
    """A micro expert for test-say-<word>: SFT only, shared tensors kept at the anchor's (as expert-tiny does)."""
    from bar_model.expert import train_expert
    from bar_model.recipe import load_expert_recipe

    recipe = load_expert_recipe("micro")
    sft = recipe.sft.model_copy(
        update={"steps": steps, "general_mix": 0.0, "shared_lr_scale": 0.0, "learning_rate": learning_rate}
    )
    return train_expert(branch, f"test-say-{word}", "sft", out, recipe.model_copy(update={"sft": sft}), progress=False)


@pytest.fixture(scope="session")
def say_experts(micro, tmp_path_factory) -> dict[str, Path]:
    """test-say-yes/no/ok micro experts (100 on their own word), and a weak test-say-no (few steps) as its v1."""
    root = tmp_path_factory.mktemp("say")
    experts = {word: train_say_expert(micro["branch"], word, root / word) for word in SAY_WORDS}
    experts["no-weak"] = train_say_expert(micro["branch"], "no", root / "no-weak", steps=8)
    return experts


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on loopback for the session (tests/seaweed.py)."""
    from tests import seaweed

    server = seaweed.start(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def s3_settings(s3_server, tmp_path) -> dict:
    """Coordinator settings that publish to ``s3_server`` under a prefix of this test's own."""
    import uuid

    secret = s3_server.credentials_file(tmp_path / "s3-credentials.json")
    return {
        "artifact_store": f"s3://{s3_server.bucket}/t-{uuid.uuid4().hex[:12]}",
        "s3_endpoint_url": s3_server.endpoint,
        "s3_credentials_file": secret,
    }
