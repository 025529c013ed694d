"""Liveness for orchestrators: the process answers."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The coordinator's process is alive (no token needed)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
