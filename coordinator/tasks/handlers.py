"""The verify job's handler: a thin wrapper around `Verifier` (plain code, no Celery)."""

from __future__ import annotations

from coordinator.verification.job import Verifier


def verify(ctx) -> dict:
    """Verify the submission the job is keyed by; a rejection is a finished job, not a failed one."""
    ctx.step("verify")
    wall_s: dict[str, float] = {}  # per step, read by /metrics from the job's result
    state = Verifier(ctx.registry, ctx.settings, ctx.blobs).run(ctx.key, ctx.work_dir / "package", wall_s)
    return {"submission": ctx.key, "state": state, "wall_s": wall_s}


def verify_failed(runtime, job) -> None:
    """The job gave up (its worker died every time, or it failed): the submission is rejected, not left pending."""
    Verifier(runtime.registry, runtime.settings, runtime.blobs).give_up(job.key, job.error_code or "VERIFICATION_ERROR")
