"""The expert card (``bar_expert.json``): what an expert is and how it was trained, readable without torch.

A node's idempotent commands read it to tell that there is nothing to do before they import the ML stack.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocol.errors import BarFedError

EXPERT_CARD = "bar_expert.json"
STAGE_CARD = "bar_stage.json"


def expert_card(directory: str | Path) -> dict:
    path = Path(directory) / EXPERT_CARD
    if not path.is_file():
        raise BarFedError("NOT_AN_EXPERT", f"{directory} has no {EXPERT_CARD}; is it an expert made by train-expert?")
    return json.loads(path.read_text())
