"""What each kind of job does: thin wrappers around plain code (verification/, release/), and the only place that
ends a job gated. The runner calls ``HANDLERS[kind](ctx)``; the returned dict is the job's result.

``BarFedError`` fails the job with its code; `Gated` ends it gated (a build the gate refused keeps its table in
the result); any other exception is a crash, retried by the runner. ``ON_FAILED[kind](runtime, job)`` runs once a
job of that kind ended failed, so what it acted on is not left half-way (a submission VERIFYING forever).
Workers may add kinds: ``task_imports`` names modules that register theirs in `HANDLERS` at import.
"""

from __future__ import annotations

from collections.abc import Callable

from coordinator.release.build import BuildRequest, build_release
from coordinator.release.gate import GateRefused
from coordinator.runtime import Runtime
from coordinator.state.models import Job
from coordinator.tasks.job_context import JobContext
from coordinator.verification.job import Verifier


class Gated(Exception):
    """A job whose result must not go further (a build the gate refused): it ends ``gated`` with ``result``."""

    def __init__(self, result: dict) -> None:
        super().__init__("gated")
        self.result = result


def verify(ctx: JobContext) -> dict:
    """Verify the submission the job is keyed by; a rejection is a finished job, not a failed one."""
    ctx.step("verify")
    wall_s: dict[str, float] = {}  # per step, read by /metrics from the job's result
    runtime = ctx.runtime
    state = Verifier(runtime.registry, runtime.settings, runtime.blobs).run(ctx.key, ctx.work_dir / "package", wall_s)
    return {"submission": ctx.key, "state": state, "wall_s": wall_s}


def verify_failed(runtime: Runtime, job: Job) -> None:
    """The job gave up (its worker died every time, or it failed): the submission is rejected, not left pending."""
    Verifier(runtime.registry, runtime.settings, runtime.blobs).give_up(job.key, job.error_code or "VERIFICATION_ERROR")


def build(ctx: JobContext) -> dict:
    """Build, gate, sign and publish a release (coordinator.release.build); a gate's refusal ends the job gated."""
    request = BuildRequest.from_params(ctx.params, ctx.job_id)
    try:
        return build_release(ctx.runtime, request, ctx.work_dir, ctx.step, ctx.save_scratch, ctx.confirm)
    except GateRefused as refused:
        raise Gated(
            {
                "code": refused.code,
                "message": refused.message,
                "regressions": refused.regressions,
                "low_retention": refused.low_retention,
                "starved": refused.starved,
                "eval": refused.table,
            }
        ) from None


HANDLERS: dict[str, Callable[[JobContext], dict]] = {"verify": verify, "build": build}
ON_FAILED: dict[str, Callable[[Runtime, Job], None]] = {"verify": verify_failed}
