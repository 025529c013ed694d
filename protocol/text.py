"""The one rule for free text a request carries (reasons, contacts, paths), on every transport.

No character of the Unicode categories that forge, split, hide or reorder what an operator reads in a log line or
an audit entry: controls (Cc: C0, DEL and C1, NEL among them), format characters (Cf: zero-width space U+200B,
bidirectional overrides such as U+202E, the byte order mark U+FEFF, ...), line and paragraph separators (Zl, Zp:
U+2028, U+2029) and surrogates (Cs: no UTF-8 for them, PostgreSQL refuses them). Everything else, letters of any
script, emoji, private-use and not yet assigned code points, is text. The rule is one regular expression, so the
REST API's OpenAPI document states exactly what gRPC's bounds (coordinator/grpc/bounds.py) and the REST bodies
(coordinator/api/fields.py) enforce.
"""

from __future__ import annotations

import re

UNICODE_VERSION = "14.0.0"  # of the table below: unicodedata's Cc, Cf, Zl and Zp ranges (tests/unit/test_text.py)
FORBIDDEN_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x2028, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)  # fmt: skip
NEWLINES = "\n\r\t"  # allowed only where text spans lines (PEM)
RULE = "no control, format (zero-width, bidirectional, BOM), line-separator or surrogate characters"


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


FORBIDDEN_CLASS = "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in FORBIDDEN_RANGES)
# For documents and pydantic: one line of plain text. Surrogates are left out of it because no regex engine that
# works on UTF-8 (pydantic's among them) can name them; `is_plain` refuses them as well.
PLAIN_PATTERN = f"^[^{FORBIDDEN_CLASS}]*$"
_FORBIDDEN = re.compile(f"[{FORBIDDEN_CLASS}\\ud800-\\udfff]")
_FORBIDDEN_BUT_NEWLINES = re.compile(f"(?![{NEWLINES}])[{FORBIDDEN_CLASS}\\ud800-\\udfff]")


def is_plain(text: str, *, newlines: bool = False) -> bool:
    """Whether ``text`` holds no forbidden character (with ``newlines``, `NEWLINES` excepted)."""
    return not (_FORBIDDEN_BUT_NEWLINES if newlines else _FORBIDDEN).search(text)
