"""Domain routing loss: a sampled example's tokens keep their routing mass on the anchor and their own expert.

Router training knows which domain every example of its stratified sample comes from. Cross-entropy alone
teaches the router only as much as a foreign expert's output hurts the next token, and on the tiny model a
dense router still leaked 10-20% of each token to foreign experts after 1000 steps, enough to break exact
answers. This adds, for every token of a domain's example, ``-log(p_anchor + p_own)`` averaged over layers:
zero once no mass leaks, and indifferent to how the token splits between the anchor and its own expert (the
language-model loss decides that). General examples (the anchor's own data) add nothing.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers.models.flex_olmo.modeling_flex_olmo import FlexOlmoTopKRouter

from bar_model.stages import BarSFTTrainer

SLOT_COLUMN = "routing_slot"


def leaked_mass_loss(
    router_logits: list[torch.Tensor], slots: torch.Tensor, mask: torch.Tensor, anchor_slot: int | None
) -> torch.Tensor:
    """Mean over layers and masked tokens of ``-log(p_anchor + p_own)`` (``-log(p_own)`` without an anchor slot).

    ``router_logits``: one [batch * seq, experts] tensor per layer; ``slots``: [batch], each example's own slot,
    or -1 for an example with none (general data); ``mask``: [batch, seq].
    """
    token_slot = slots[:, None].expand_as(mask).reshape(-1)
    keep = mask.reshape(-1).bool() & (token_slot >= 0)
    if not keep.any():
        return router_logits[0].sum() * 0.0
    own = token_slot[keep][:, None]
    terms = []
    for logits in router_logits:
        probs = logits.float().softmax(dim=-1)[keep]
        kept = probs.gather(1, own).squeeze(1)
        if anchor_slot is not None:
            kept = kept + probs[:, anchor_slot]
        terms.append(-torch.log(kept).mean())
    return torch.stack(terms).mean()


class DomainRoutingTrainer(BarSFTTrainer):
    """Router training's SFT trainer with the domain routing loss added, weighted by ``routing_loss_coef``."""

    def __init__(
        self,
        *args,
        train_dataset: Dataset,
        routing_slots: list[int],
        anchor_slot: int | None,
        routing_loss_coef: float,
        **kwargs,
    ):
        super().__init__(*args, train_dataset=train_dataset.add_column(SLOT_COLUMN, routing_slots), **kwargs)
        self.routing_loss_coef, self.anchor_slot = routing_loss_coef, anchor_slot
        self._router_logits: list[torch.Tensor] = []
        self._hooks = [
            module.register_forward_hook(self._record)
            for module in self.model.modules()
            if isinstance(module, FlexOlmoTopKRouter)
        ]
        collate = self.data_collator
        self.data_collator = lambda examples: {
            **collate(examples),
            SLOT_COLUMN: torch.tensor([e[SLOT_COLUMN] for e in examples]),
        }

    def _record(self, _module, _inputs, output) -> None:
        if torch.is_grad_enabled():
            self._router_logits.append(output[0])

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if SLOT_COLUMN not in self._signature_columns:  # keep the column through Trainer's column pruning
            self._signature_columns.append(SLOT_COLUMN)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        slots = inputs.pop(SLOT_COLUMN)
        mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
        self._router_logits.clear()
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not self._router_logits:
            return result
        extra = self.routing_loss_coef * leaked_mass_loss(
            self._router_logits, slots.to(mask.device), mask, self.anchor_slot
        )
        self._router_logits.clear()
        if return_outputs:
            return result[0] + extra, result[1]
        return result + extra

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
