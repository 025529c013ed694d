"""On a CPU, SFT's loss comes from the model's logits instead of TRL's fused LM head
(stages.LogitsLossWithoutTritonMixin): the same loss and the same gradients on the same batch, normalised by the
same ``num_items_in_batch``."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTTrainer

from bar_model.branch import init_anchor
from bar_model.domains import get_domain
from bar_model.recipe import load_router_recipe
from bar_model.stages import BarSFTTrainer, chat_trainer
from barfed.anchors import check_shipped


@pytest.fixture(scope="module")
def branch(tmp_path_factory):
    _base, anchor = check_shipped("tiny")
    return init_anchor(anchor, tmp_path_factory.mktemp("loss") / "branch")


def test_the_logits_loss_is_trls_loss_with_the_same_gradients(branch, tmp_path, monkeypatch):
    import trl.trainer.utils

    fused_calls = []
    fused = trl.trainer.utils._ChunkedLogProbFunction

    class Counted(fused):
        @staticmethod
        def forward(ctx, *args):
            fused_calls.append(1)
            return fused.forward(ctx, *args)

    monkeypatch.setattr(trl.trainer.utils, "_ChunkedLogProbFunction", Counted)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(branch, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(branch)
    recipe = load_router_recipe("demo").model_copy(update={"batch_size": 4, "steps": 1})
    trainer = chat_trainer(model, tokenizer, get_domain("math").sft(8), recipe, tmp_path, seed=0, progress=False)
    assert isinstance(trainer, BarSFTTrainer)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < answer_tokens < batch["labels"].numel()  # prompts are masked out: the test can tell the two apart
    model.train()
    results = []
    for compute_loss in (BarSFTTrainer.compute_loss, SFTTrainer.compute_loss):
        for count in (None, answer_tokens * 3):
            model.zero_grad()
            loss = compute_loss(trainer, model, dict(batch), num_items_in_batch=count)
            loss.backward()
            results.append((loss.detach(), model.lm_head.weight.grad.clone()))
        assert len(fused_calls) == (0 if compute_loss is BarSFTTrainer.compute_loss else 2)
    (logits_mean, logits_grad), (logits_sum, _), (fused_mean, fused_grad), (fused_sum, _) = results
    assert torch.allclose(logits_mean, fused_mean, rtol=1e-5), (logits_mean, fused_mean)
    assert torch.allclose(logits_sum, fused_sum, rtol=1e-5), (logits_sum, fused_sum)
    assert torch.allclose(logits_sum * 3, logits_mean, rtol=1e-5)
    # float32 sums taken in another order (TRL's chunks against whole logits) differ by about 1e-6 of the gradient's
    # scale: 2.1e-6 at most where the largest entry is 1.94 on an AMD EPYC, on one entry close to zero. A loss that
    # normalised or masked differently would be off by far more than 1e-5 of that scale.
    scale = float(fused_grad.abs().max())
    assert torch.allclose(logits_grad, fused_grad, rtol=1e-4, atol=1e-5 * scale)
