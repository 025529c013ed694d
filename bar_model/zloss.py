"""Router z-loss (ST-MoE): mean squared log-sum-exp of router logits, keeping router logits small.

Collected with forward hooks on every router, so it works with any trainer's own loss (SFT, GRPO)
without re-implementing their forward passes; only passes that build a graph are counted.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.flex_olmo.modeling_flex_olmo import FlexOlmoTopKRouter


def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(router_logits.float(), dim=-1).pow(2).mean()


class RouterZLoss:
    """Accumulates the z-loss of every router call made with gradients enabled."""

    def __init__(self, model: nn.Module) -> None:
        self._terms: list[torch.Tensor] = []
        self._hooks = [
            module.register_forward_hook(self._record)
            for module in model.modules()
            if isinstance(module, FlexOlmoTopKRouter)
        ]

    def _record(self, _module: nn.Module, _inputs: tuple, output: tuple) -> None:
        if torch.is_grad_enabled():
            self._terms.append(router_z_loss(output[0]))

    def pop(self) -> torch.Tensor | None:
        """Mean z-loss over the router calls since the last pop (None when there were none)."""
        if not self._terms:
            return None
        value = torch.stack(self._terms).mean()
        self._terms.clear()
        return value

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._terms.clear()


class ZLossTrainerMixin:
    """Adds ``z_loss_coef`` × router z-loss to whatever loss the trainer computes."""

    z_loss: RouterZLoss | None = None
    z_loss_coef: float = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.z_loss is not None:
            self.z_loss.pop()  # drop anything recorded outside this loss computation
        result = super().compute_loss(  # type: ignore[misc]
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        z = self.z_loss.pop() if self.z_loss is not None else None
        if z is None or self.z_loss_coef == 0:
            return result
        if return_outputs:
            loss, outputs = result
            return loss + self.z_loss_coef * z.to(loss.device), outputs
        return result + self.z_loss_coef * z.to(result.device)
