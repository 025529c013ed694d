"""What kind of refusal each stable error code is, for every transport: gRPC maps the kind to a status code,
the REST API to an HTTP status, so a code means the same thing on both."""

from __future__ import annotations

CODE_KIND = {
    **dict.fromkeys(
        (
            *("CLIENT_CERT_REQUIRED", "CERT_UNKNOWN", "CERT_REVOKED", "CERT_NOT_AN_ORG"),
            *("NO_TOKEN", "BAD_TOKEN", "UNKNOWN_TOKEN", "TOKEN_REVOKED", "TOKEN_EXPIRED"),
        ),
        "UNAUTHENTICATED",
    ),
    **dict.fromkeys(
        ("DOMAIN_NOT_OWNED", "ORG_REVOKED", "BAD_ENROLLMENT_TOKEN", "TOKEN_USED", "FORBIDDEN"), "PERMISSION_DENIED"
    ),
    **dict.fromkeys(
        (
            *("UNKNOWN_SESSION", "UNKNOWN_SUBMISSION", "UNKNOWN_ENROLLMENT", "NO_ANCHOR", "UNKNOWN_EXPERT"),
            *("UNKNOWN_RELEASE", "UNKNOWN_JOB", "UNKNOWN_FILE", "UNKNOWN_CHANNEL", "NOT_FOUND"),
        ),
        "NOT_FOUND",
    ),
    **dict.fromkeys(
        (
            *("OFFSET_MISMATCH", "UPLOAD_INCOMPLETE", "SESSION_CLOSED", "SESSION_EXPIRED", "VERSION_NOT_NEWER"),
            *("BAD_TRANSITION", "BAD_JOB_STATE", "JOB_NOT_ACTIVE", "NOTHING_TO_ROLL_BACK", "NOT_PENDING"),
            *("NOTHING_CHANGED", "NOT_INITIALIZED", "DATABASE_UNREACHABLE", "EXPERT_NO_LONGER_ACCEPTED"),
            *("UPLOAD_STALLED", "SESSION_TAKEN_OVER"),  # an upload stream ended so its session is free again
        ),
        "FAILED_PRECONDITION",
    ),
    **dict.fromkeys(
        (
            "TOO_MANY_SESSIONS",
            "TOO_MANY_PENDING",
            "FILE_TOO_LARGE",
            "PACKAGE_TOO_LARGE",
            "CHUNK_TOO_LARGE",
            "INSUFFICIENT_STORAGE",
            "SESSION_BUSY",
            "ENROLL_RATE_LIMITED",
            "ENROLL_BUSY",
            "RATE_LIMITED",
        ),
        "RESOURCE_EXHAUSTED",
    ),
    "UNKNOWN_ORG": "NOT_FOUND",
    "JOB_NOT_RETRYABLE": "FAILED_PRECONDITION",
    **dict.fromkeys(("DOMAIN_TAKEN", "RELEASE_EXISTS"), "ALREADY_EXISTS"),
    "DATABASE_UNAVAILABLE": "UNAVAILABLE",  # an outage, not a bug: the caller retries shortly
    # the object store is down or refuses the coordinator's credentials: the operator's to fix, not the caller's
    **dict.fromkeys(("STORE_UNREACHABLE", "STORE_ACCESS_DENIED"), "UNAVAILABLE"),
    # an object of a published release is missing, altered or in the way: refused until the operator restores it
    **dict.fromkeys(("STORE_OBJECT_MISSING", "STORE_OBJECT_CORRUPT", "STORE_OBJECT_CONFLICT"), "FAILED_PRECONDITION"),
    # a published release on disk no longer matches its signature: refused (409) until the operator restores it
    "RELEASE_UNVERIFIED": "FAILED_PRECONDITION",
    "INTERNAL_ERROR": "INTERNAL",  # a bug, logged with its traceback; everything else is INVALID_ARGUMENT
}


def kind_of(code: str) -> str:
    """UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, ALREADY_EXISTS,
    UNAVAILABLE, INTERNAL, or INVALID_ARGUMENT for every other code (the caller's input was wrong)."""
    return CODE_KIND.get(code, "INVALID_ARGUMENT")
