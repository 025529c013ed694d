"""Run `barfed` as a pull-only install has it: a subprocess whose imports of the node's and the coordinator's stacks
fail as if those distributions were absent (a ``sys.meta_path`` finder refuses them, ``find_spec`` included), so the
full test environment proves what the base install (pyproject.toml's ``dependencies``) can do."""

from __future__ import annotations

import os
import subprocess
import sys

EXTRAS_ONLY = (  # top-level modules that only the extras install: the node's stack, then the coordinator's
    *("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "safetensors", "numpy", "grpc"),
    *("huggingface_hub", "fastapi", "fastapi_offline", "starlette", "uvicorn", "prometheus_client"),
    *("celery", "kombu", "redis", "sqlalchemy", "alembic", "psycopg", "psycopg_binary"),
)

# Run as `python -c`: refuse the extras' modules, check none was loaded before (a .pth file), then the real CLI.
RUNNER = f"""
import sys
REFUSED = {EXTRAS_ONLY!r}
early = [name for name in sys.modules if name.split(".")[0] in REFUSED]
if early:
    sys.exit(f"loaded before the finder: {{early}}")

class BaseInstallOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the base install)", name=name)
        return None

sys.meta_path.insert(0, BaseInstallOnly())
sys.argv[0] = "barfed"
from barfed.cli import main
main()
"""


def run_base(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``barfed *args`` with only the base install importable."""
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
