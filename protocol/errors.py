"""The one error type a user can cause, with a stable code and a sentence that says what to do."""

from __future__ import annotations


class BarFedError(Exception):
    """A failure the caller can act on.

    ``code`` is stable across releases (tests, clients and the wire protocol match on it);
    ``message`` is a full sentence that says what went wrong and what to do about it.
    """

    MAX_MESSAGE = 2000  # messages may quote untrusted input; never echo megabytes of it

    def __init__(self, code: str, message: str) -> None:
        if not code or not code.isupper() or " " in code:
            raise ValueError(f"error codes are UPPER_SNAKE_CASE, got {code!r}")
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE] + "…"
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
