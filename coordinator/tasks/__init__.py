"""The task layer: verification and release builds run as Celery tasks keyed by their job rows.

``celery -A coordinator.tasks worker`` finds ``app`` here, built on first access from the coordinator's settings
(coordinator.toml or $BARFED_COORDINATOR_CONFIG, and BARFED_COORD_* variables), so importing this package has no
side effects. The coordinator itself builds its app with `make_app(settings)`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]
_app: Any = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            from coordinator.settings import load_settings
            from coordinator.tasks.app import make_app

            _app = make_app(load_settings())
        return _app
    raise AttributeError(name)
