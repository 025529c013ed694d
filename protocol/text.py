"""The one rule for free text a request carries (reasons, contacts, tokens, paths), on every transport.

Only printable characters (`str.isprintable`): no C0/C1 controls (NEL U+0085 among them), no line or paragraph
separators (U+2028, U+2029), no format characters (zero-width space U+200B, bidirectional overrides such as
U+202E, the byte order mark U+FEFF), no surrogates or unassigned code points, no space other than U+0020. Such
characters forge or split log lines and audit entries, or hide and reorder what an operator reads in them.
gRPC's bounds (coordinator/grpc/bounds.py) and the REST bodies (coordinator/api/fields.py) both apply it.
"""

from __future__ import annotations

NEWLINES = "\n\r\t"  # allowed only where text spans lines (PEM)
RULE = "printable characters only: no control, format (zero-width, bidirectional, BOM) or line-separator characters"


def is_plain(text: str, *, newlines: bool = False) -> bool:
    """Whether every character of ``text`` is printable (or, with ``newlines``, one of `NEWLINES`)."""
    return all(c.isprintable() or (newlines and c in NEWLINES) for c in text)
