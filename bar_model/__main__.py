"""`python -m bar_model …` (e.g. under `accelerate launch -m bar_model train-expert …`)."""

import sys

from bar_model.cli import app
from protocol.errors import BarFedError

try:
    app()
except BarFedError as exc:
    print(f"error [{exc.code}] {exc.message}", file=sys.stderr)
    sys.exit(2)
