"""protocol/text.py: the free-text rule is exactly the Unicode categories it names, and refuses what forged lines."""

from __future__ import annotations

import re
import unicodedata

import pytest

from protocol.text import FORBIDDEN_RANGES, PLAIN_PATTERN, UNICODE_VERSION, is_plain

CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}


@pytest.mark.skipif(unicodedata.unidata_version != UNICODE_VERSION, reason="the table is of another Unicode version")
def test_the_table_is_every_control_format_and_separator_character():
    listed = {code for first, last in FORBIDDEN_RANGES for code in range(first, last + 1)}
    wanted = {code for code in range(0x110000) if unicodedata.category(chr(code)) in CATEGORIES}
    assert listed == wanted


FORGERS = ["\x00", "\n", "\x1b", "\x85", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff", "\U000e0041", "\ud800"]


@pytest.mark.parametrize("char", FORGERS)
def test_what_forges_hides_or_reorders_a_line_is_refused(char):
    assert not is_plain(f"quarantined{char}by admin")
    assert not re.fullmatch(PLAIN_PATTERN, f"a{char}b") or char == "\ud800"  # the document cannot name surrogates


@pytest.mark.parametrize("text", ["plain reason", "Überprüft: 数学 ✓ 😀", "nbsp\u00a0ok", "\U000389a2", "\ue000"])
def test_any_script_emoji_private_use_and_unassigned_are_text(text):
    assert is_plain(text) and re.fullmatch(PLAIN_PATTERN, text)


def test_newlines_only_where_text_spans_lines():
    pem = "-----BEGIN CERTIFICATE REQUEST-----\r\nMIIB\tx\n-----END CERTIFICATE REQUEST-----\n"
    assert is_plain(pem, newlines=True) and not is_plain(pem)
    assert not is_plain("line\n\u2028", newlines=True)
