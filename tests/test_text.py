"""Text from outside is one line of visible characters, capped."""

from hypothesis import given
from hypothesis import strategies as st

from drivers.contract.text import printable


def test_escape_sequences_and_line_breaks_are_shown_not_obeyed():
    assert printable("ABB\x1b[2J\x1b]0;pwned\x07") == "ABB\\x1b[2J\\x1b]0;pwned\\x07"
    assert (
        printable("boot\r\nWARNING forged line") == "boot\\x0d\\x0aWARNING forged line"
    )
    assert printable("a\u202eb\u200bc") == "a\\u202eb\\u200bc"
    assert (
        printable("C:\\x1b") == "C:\\\\x1b"
    )  # a typed-in escape stays distinguishable from a real one


def test_plain_text_and_accents_pass_unchanged():
    assert printable("Laadpaal Marktplein – ré 2") == "Laadpaal Marktplein – ré 2"
    assert printable(12) == "12"


def test_long_text_is_capped():
    assert printable("x" * 600, limit=10) == "x" * 10 + "…"


@given(st.text(), st.integers(min_value=1, max_value=50))
def test_result_is_one_visible_line_within_the_cap(text, limit):
    shown = printable(text, limit)
    body = shown.removesuffix("…")
    assert len(body) <= limit
    assert all(ch.isprintable() for ch in body)
    assert "\n" not in shown and "\x1b" not in shown
