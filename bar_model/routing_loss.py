"""Expert-preserving routing loss: router training keeps every expert's own anchor/expert split.

Each expert learned its FFN inside a two-way mixture with the anchor, split by its own router row against the
anchor's row (frozen, so the same in every expert). The merged model computes exactly that expert on a token
its router gives to nobody else and splits between the anchor and the expert as the expert's rows did.
Cross-entropy alone teaches the router only as much as a foreign expert hurts the next token: on the tiny model
a dense router still leaked 10-20% of each token to foreign experts and re-split the rest, and lost up to 43%
of an expert's exact answers. This names the target: on every token of a sampled domain's example, the
cross-entropy from the expert's own split (the router rows as merged, frozen, applied to the token's current
hidden state) to the router's distribution; on the anchor's general examples, the anchor alone.
"""

from __future__ import annotations

from functools import partial

import torch
from datasets import Dataset
from torch.nn import functional as F
from transformers.models.flex_olmo.modeling_flex_olmo import FlexOlmoTopKRouter

from bar_model.stages import BarSFTTrainer

SLOT_COLUMN = "routing_slot"


def expert_routing_loss(
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    slots: torch.Tensor,
    mask: torch.Tensor,
    anchor_slot: int | None,
) -> torch.Tensor:
    """Mean over router calls and tokens of the cross-entropy from the expert's own split to the router's.

    ``calls``: per layer, (hidden [tokens, H], router logits [tokens, E], the merged rows [E, H]);
    ``slots``: [batch], each example's own slot (the anchor's for general data, -1 for none);
    ``mask``: [batch, seq], the tokens that count.
    """
    token_slot = slots[:, None].expand_as(mask).reshape(-1)
    keep = mask.reshape(-1).bool() & (token_slot >= 0)
    if not keep.any():
        return calls[0][1].sum() * 0.0
    own = token_slot[keep]
    terms = []
    for hidden, logits, rows in calls:
        allowed = F.one_hot(own, rows.shape[0]).bool()
        if anchor_slot is not None:
            allowed[:, anchor_slot] = True
        teacher = F.linear(hidden[keep].detach().float(), rows.float()).masked_fill(~allowed, float("-inf"))
        target = teacher.softmax(dim=-1)
        log_probs = logits[keep].float().log_softmax(dim=-1)
        terms.append(-(target * log_probs.masked_fill(~allowed, 0.0)).sum(dim=-1).mean())
    return torch.stack(terms).mean()


class ExpertRoutingTrainer(BarSFTTrainer):
    """Router training's SFT trainer with the expert routing loss added, weighted by ``routing_loss_coef``."""

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
        self._calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._hooks = [
            module.register_forward_hook(partial(self._record, module.weight.detach().clone()))
            for module in self.model.modules()
            if isinstance(module, FlexOlmoTopKRouter)
        ]
        collate = self.data_collator
        self.data_collator = lambda examples: {
            **collate(examples),
            SLOT_COLUMN: torch.tensor([e[SLOT_COLUMN] for e in examples]),
        }

    def _record(self, rows: torch.Tensor, _module, inputs, output) -> None:
        if torch.is_grad_enabled():
            self._calls.append((inputs[0], output[0], rows))

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if SLOT_COLUMN not in self._signature_columns:  # keep the column through Trainer's column pruning
            self._signature_columns.append(SLOT_COLUMN)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        slots = inputs.pop(SLOT_COLUMN)
        mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
        self._calls.clear()
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not self._calls:
            return result
        extra = self.routing_loss_coef * expert_routing_loss(self._calls, slots.to(mask.device), mask, self.anchor_slot)
        self._calls.clear()
        if return_outputs:
            return result[0] + extra, result[1]
        return result + extra

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
