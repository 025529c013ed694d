"""The tiny base and its anchor: a BPE tokenizer, a small `Olmo2ForCausalLM` pretrained on general text (and
optionally a share of every domain's text), and the anchor, which is that base after general SFT (DESIGN §2).

Each product is published atomically and skipped when it already exists, so an interrupted build
resumes where it stopped (inside a training loop, from the loop's last checkpoint).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, Olmo2Config, Olmo2ForCausalLM

from bar_model.checkpoint import on_main_process, write_json
from bar_model.domains import domain_names, get_domain
from bar_model.durable import atomic_directory
from bar_model.recipe import BaseRecipe
from bar_model.stages import train_chat, train_language_model
from bar_model.tokenizer import train_tokenizer
from protocol.errors import BarFedError

log = logging.getLogger(__name__)


def tokenizer_corpus(texts_per_domain: int, seed: int) -> list[str]:
    """Text from every domain, so no domain's notation falls back to single bytes."""
    corpus = []
    for name in domain_names():
        domain = get_domain(name)
        corpus += domain.mid_texts(texts_per_domain, seed)
        corpus += [f"{e.prompt}\n{e.response}" for e in domain.sft(texts_per_domain, seed)]
    return corpus


def pretraining_corpus(documents: int, domain_text_share: float, seed: int) -> list[str]:
    """General text, plus a share of every other domain's text, as a web-pretrained base would have seen.

    Without that share, tokens only the domains use (digits, JSON punctuation) keep near-random LM-head rows,
    so an expert can only gain the skill by moving the LM head, which the merge then averages away.
    """
    others = [name for name in domain_names() if name != "general"]
    per_domain = round(documents * domain_text_share / len(others)) if others else 0
    corpus = get_domain("general").mid_texts(documents - per_domain * len(others), seed)
    for name in others:  # another seed than the experts' mid-training text
        corpus += get_domain(name).mid_texts(per_domain, seed + 7919)
    random.Random(seed).shuffle(corpus)
    return corpus


def _save(model, tokenizer, final: Path, record: dict) -> None:
    with atomic_directory(final) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / "bar_build.json", record)


def build_base(recipe: BaseRecipe, out_dir: str | Path, *, progress: bool = True) -> tuple[Path, Path]:
    """Build ``out_dir/base`` and ``out_dir/anchor``; returns both paths."""
    out_dir = Path(out_dir)
    base_dir, anchor_dir, work = out_dir / "base", out_dir / "anchor", out_dir / ".work"
    record = {"recipe": recipe.model_dump()}
    general = get_domain("general")
    for existing in (base_dir, anchor_dir):
        built = existing / "bar_build.json"
        if built.is_file() and json.loads(built.read_text()).get("recipe") != record["recipe"]:
            raise BarFedError(
                "BASE_RECIPE_MISMATCH",
                f"{existing} was built with another base recipe; remove {out_dir} to rebuild it, or choose another "
                "output directory.",
            )

    if not base_dir.exists():
        torch.manual_seed(recipe.seed)
        log.info("training tokenizer (vocab %d)", recipe.tokenizer.vocab_size)
        tokenizer = train_tokenizer(
            tokenizer_corpus(recipe.tokenizer.texts_per_domain, recipe.seed), recipe.tokenizer.vocab_size
        )
        size = recipe.model
        config = Olmo2Config(
            vocab_size=len(tokenizer),
            hidden_size=size.hidden_size,
            num_hidden_layers=size.num_hidden_layers,
            num_attention_heads=size.num_attention_heads,
            intermediate_size=size.intermediate_size,
            max_position_embeddings=size.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta},
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            tie_word_embeddings=False,
        )
        model = Olmo2ForCausalLM(config)
        model.generation_config = GenerationConfig(
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        )
        log.info("pretraining base: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
        summary = train_language_model(
            model,
            tokenizer,
            pretraining_corpus(recipe.pretrain.documents, recipe.pretrain.domain_text_share, recipe.seed),
            recipe.pretrain,
            work / "pretrain",
            seed=recipe.seed,
            progress=progress,
        )
        on_main_process(_save, model, tokenizer, base_dir, {**record, "stage": "pretrain", "summary": summary})

    if not anchor_dir.exists():
        model = Olmo2ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        log.info("general SFT for the anchor")
        summary = train_chat(
            model,
            tokenizer,
            general.sft(recipe.anchor_sft.examples, recipe.seed),
            recipe.anchor_sft,
            work / "anchor_sft",
            seed=recipe.seed,
            progress=progress,
        )
        on_main_process(_save, model, tokenizer, anchor_dir, {**record, "stage": "anchor_sft", "summary": summary})

    on_main_process(shutil.rmtree, work, ignore_errors=True)
    return base_dir, anchor_dir


def build_summary(directory: Path) -> dict:
    path = directory / "bar_build.json"
    return json.loads(path.read_text()) if path.is_file() else {}
