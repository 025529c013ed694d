"""The training loops, on TRL's trainers: language modelling on text, SFT on chats, RLVR with GRPO.

One function per kind of loop; what is trainable is decided by the caller (``freezing.StageFreeze``),
so the same loops serve base pretraining, the anchor's general SFT and the three BAR expert stages.
Every loop checkpoints into ``work_dir`` and resumes from its newest complete checkpoint.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
from datasets import Dataset
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from bar_model.domains import Domain, Example
from bar_model.freezing import StageFreeze
from bar_model.recipe import LoopRecipe, RlRecipe
from bar_model.zloss import RouterZLoss, ZLossTrainerMixin

log = logging.getLogger(__name__)
# TRL 1.16 still calls a transformers attribute renamed in v5; the warning is theirs, not the user's.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


class ConvertingResumeMixin:
    """Resume restores the weights through ``from_pretrained``, with transformers' checkpoint conversion.

    Trainer's own resume is a plain ``load_state_dict(strict=False)``. transformers 5 keeps MoE experts fused
    in memory but saves them per expert, so that load skips every expert FFN with only a warning, and a
    resumed expert silently continues from the weights its stage *started* with.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if getattr(self, "is_fsdp_enabled", False):  # FSDP checkpoints are sharded state dicts: Trainer's own path
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]
        model = model if model is not None else self.model  # type: ignore[attr-defined]
        dtype = next(model.parameters()).dtype
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=dtype, use_safetensors=True)
        model.load_state_dict(saved.state_dict(), strict=True)


class LogitsLossWithoutTritonMixin:
    """Where TRL has no Triton kernels (a CPU, Apple's MPS), SFT's loss comes from the model's own logits
    (transformers' causal-LM loss), not TRL's fused LM head; on CUDA and XPU TRL's own path runs.

    TRL scores every position through its chunked log-prob function, which on a device without Triton is a
    torch loop that also computes entropy and top-1 accuracy for its metrics, and slower still under the
    deterministic algorithms router training runs with: on the tiny anchor (vocabulary 2048, 16 × 128 tokens, one
    thread) a router step took 492 ms with it and 302 ms without, an expert's SFT step 274 and 192
    (`bench/sft_loss_head.py`, docs/PERFORMANCE.md).
    The loss is the same: the answer tokens' negative log-likelihood summed over ``num_items_in_batch``. Only
    TRL's entropy and token-accuracy metrics go, which nothing here reads.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plain = (
            not return_outputs
            and model.device.type not in ("cuda", "xpu")  # where TRL's log-prob kernels are Triton's
            and self.args.loss_type == "nll"  # type: ignore[attr-defined]
            and not self.aux_loss_enabled  # type: ignore[attr-defined]
            and self.label_smoother is None  # type: ignore[attr-defined]
            and self.compute_loss_func is None  # type: ignore[attr-defined]
        )
        if not plain:
            return super().compute_loss(  # type: ignore[misc]
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        inputs["use_cache"] = False
        loss = model(**inputs, num_items_in_batch=num_items_in_batch).loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:  # type: ignore[attr-defined]
            loss = loss * self.accelerator.num_processes  # type: ignore[attr-defined]  # as SFTTrainer and DDP do
        return loss


class BarSFTTrainer(ConvertingResumeMixin, ZLossTrainerMixin, LogitsLossWithoutTritonMixin, SFTTrainer):
    pass


class BarGRPOTrainer(ConvertingResumeMixin, ZLossTrainerMixin, GRPOTrainer):
    pass


class StepReport(TrainerCallback):
    """Tells ``on_step(step, total)`` after each optimizer step, on the main process only, so a caller can show
    how far a long stage is. It only observes: nothing it does changes what is trained."""

    def __init__(self, on_step: Callable[[int, int], None]) -> None:
        self.on_step = on_step

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero:
            self.on_step(state.global_step, state.max_steps)


class CheckpointSaved(TrainerCallback):
    """Calls ``on_save()`` once each checkpoint is on disk (older ones already rotated away), so a caller can copy
    it off the machine. It changes nothing that is trained; an error it raises ends the run (resumable from that
    checkpoint)."""

    def __init__(self, on_save: Callable[[], None]) -> None:
        self.saved = on_save

    def on_save(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero:
            self.saved()


class BarOnly(ProgressCallback):
    """Transformers' progress bar without the log dict it writes under it at every logging step: a run's losses
    are in its summary, and in the experiment tracker the recipe's ``report_to`` names."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        pass


def use_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def latest_checkpoint(work_dir: Path) -> str | None:
    """Newest complete trainer checkpoint in ``work_dir``; incomplete ones (killed mid-save) are removed."""
    found = []
    for path in work_dir.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match is None:
            continue
        if (path / "trainer_state.json").is_file():
            found.append((int(match.group(1)), path))
        else:
            shutil.rmtree(path, ignore_errors=True)
    return str(max(found)[1]) if found else None


def _args(loop: LoopRecipe, work_dir: Path, seed: int, progress: bool) -> dict:
    return {
        "output_dir": str(work_dir),
        "max_steps": loop.steps,
        "per_device_train_batch_size": loop.batch_size,
        "learning_rate": loop.learning_rate,
        "weight_decay": loop.weight_decay,
        "lr_scheduler_type": "linear",
        "warmup_steps": round(loop.warmup_ratio * loop.steps),
        "max_grad_norm": loop.max_grad_norm,
        "logging_steps": max(1, loop.steps // 10),
        "save_steps": loop.save_steps,
        "save_total_limit": 1,
        "seed": seed,
        "data_seed": seed,
        "report_to": list(loop.report_to),  # trackers write under output_dir (TensorBoard: runs/), or their own place
        "bf16": use_bf16(),
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),
        "disable_tqdm": not progress,
        "activation_checkpointing": loop.activation_checkpointing,
    }


def build_trainer(
    trainer_cls,
    model,
    args,
    freeze: StageFreeze | None,
    z_loss_coef: float,
    on_step: Callable[[int, int], None] | None = None,
    **kwargs,
):
    """A TRL trainer whose optimizer only sees what ``freeze`` lets train, with router z-loss attached and, given
    ``on_step``, a report after every step."""
    if args.disable_tqdm:
        datasets.disable_progress_bars()
    optimizers = (None, None)
    if freeze is not None:
        groups = freeze.param_groups(args.weight_decay, args.learning_rate)
        optimizers = (torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=0.0), None)
    trainer = trainer_cls(model=model, args=args, optimizers=optimizers, **kwargs)
    trainer.remove_callback(PrinterCallback)  # without a bar the Trainer prints every log dict instead
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly())
    if on_step is not None:
        trainer.add_callback(StepReport(on_step))
    trainer.z_loss = RouterZLoss(model) if z_loss_coef > 0 else None
    trainer.z_loss_coef = z_loss_coef
    return trainer


def run_trainer(trainer) -> dict:
    """Train (resuming from the newest checkpoint if there is one) and summarise the log history."""
    resume = latest_checkpoint(Path(trainer.args.output_dir))
    if resume:
        log.info("resuming from %s", resume)
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        if trainer.z_loss is not None:
            trainer.z_loss.remove()
        if trainer.args.activation_checkpointing:
            trainer.model.gradient_checkpointing_disable()
        trainer.model.eval()  # left in train mode, generate() silently misbehaves
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {
        "steps": trainer.state.global_step,
        "wall_s": round(time.perf_counter() - started, 1),
        "resumed_from": Path(resume).name if resume else None,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    if rewards:
        summary.update(first_reward=rewards[0], last_reward=rewards[-1])
    return summary


def train_language_model(
    model,
    tokenizer,
    texts: list[str],
    loop: LoopRecipe,
    work_dir: Path,
    *,
    seed: int,
    freeze: StageFreeze | None = None,
    z_loss_coef: float = 0.0,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Next-token prediction on raw text, packed into ``max_length`` blocks (pretraining, mid-training)."""
    config = SFTConfig(
        **_args(loop, work_dir, seed, progress),
        max_length=loop.max_length,
        packing=True,
        packing_strategy="wrapped",
        dataset_text_field="text",
    )
    dataset = Dataset.from_dict({"text": texts})
    return run_trainer(
        build_trainer(
            BarSFTTrainer,
            model,
            config,
            freeze,
            z_loss_coef,
            on_step,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    )


def chat_dataset(examples: list[Example]) -> Dataset:
    """Prompt/completion chats, so the loss covers only the assistant's tokens."""
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": e.prompt}],
                "completion": [{"role": "assistant", "content": e.response}],
            }
            for e in examples
        ]
    )


def chat_trainer(
    model,
    tokenizer,
    examples: list[Example],
    loop: LoopRecipe,
    work_dir: Path,
    *,
    seed: int,
    freeze: StageFreeze | None = None,
    z_loss_coef: float = 0.0,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """A trainer for supervised fine-tuning on chats; prompt tokens are masked out of the loss."""
    config = SFTConfig(
        **_args(loop, work_dir, seed, progress),
        max_length=loop.max_length,
        completion_only_loss=True,
        shuffle_dataset=True,
    )
    return build_trainer(
        BarSFTTrainer,
        model,
        config,
        freeze,
        z_loss_coef,
        on_step,
        train_dataset=chat_dataset(examples),
        processing_class=tokenizer,
    )


def train_chat(model, tokenizer, examples: list[Example], loop: LoopRecipe, work_dir: Path, **kwargs) -> dict:
    """Supervised fine-tuning on chats (see ``chat_trainer``)."""
    return run_trainer(chat_trainer(model, tokenizer, examples, loop, work_dir, **kwargs))


def mixed_sft_examples(domain: Domain, general: Domain, n: int, general_mix: float, seed: int) -> list[Example]:
    """``n`` SFT chats: a ``general_mix`` fraction of general data, the rest from ``domain``, shuffled."""
    n_general = round(n * general_mix)
    examples = domain.sft(n - n_general, seed) + general.sft(n_general, seed)
    random.Random(seed).shuffle(examples)
    return examples


def domain_reward_function(domain: Domain):
    """A TRL reward function scoring completions with the domain's verifiable reward."""

    def reward(prompts, completions, user, response, answer, source, **_kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [
            domain.reward(Example(prompt=u, response=r, answer=a, domain=d), text)
            for u, r, a, d, text in zip(user, response, answer, source, texts, strict=True)
        ]

    reward.__name__ = f"{domain.name}_reward"
    return reward


def train_rl(
    model,
    tokenizer,
    domain: Domain,
    examples: list[Example],
    loop: RlRecipe,
    work_dir: Path,
    *,
    seed: int,
    freeze: StageFreeze | None = None,
    z_loss_coef: float = 0.0,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """RLVR: GRPO with the domain's verifiable reward and no KL term (beta = 0), as BAR does."""
    config = GRPOConfig(
        **_args(loop, work_dir, seed, progress),
        beta=0.0,
        num_generations=loop.num_generations,
        max_completion_length=loop.max_completion_length,
        temperature=loop.temperature,
        epsilon=loop.epsilon,
        loss_type=loop.loss_type,
    )
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": e.prompt}],
                "user": e.prompt,
                "response": e.response,
                "answer": e.answer,
                "source": e.domain,
            }
            for e in examples
        ]
    )
    return run_trainer(
        build_trainer(
            BarGRPOTrainer,
            model,
            config,
            freeze,
            z_loss_coef,
            on_step,
            reward_funcs=[domain_reward_function(domain)],
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    )
