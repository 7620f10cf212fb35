"""Text from outside (a charger's boot strings and error info, an unknown charger's id, a sensor's
payload) made safe to log, store and show on a terminal: control characters escaped, length capped.

A charger can put an ESC sequence into its vendor name or a line break into its error info; shown
as is, the first reprograms the technician's terminal and the second forges a log line.
"""

from __future__ import annotations

import logging
import unicodedata

#: The longest text from outside kept whole, in characters; OCPP's longest free strings are 500.
MAX_OUTSIDE_TEXT = 500


def printable(text: object, limit: int = MAX_OUTSIDE_TEXT) -> str:
    """`text` as one line of visible characters, at most `limit` of them plus a trailing `…`.

    Control and format characters (C0, DEL, C1, bidi overrides, zero-width ones) become `\\xNN`,
    `\\uNNNN` escapes; a backslash is doubled so an escape cannot be faked. Anything not a string
    is shown by its `str`.
    """
    raw = text if isinstance(text, str) else str(text)
    out: list[str] = []
    size = 0
    for ch in raw:
        if ch == "\\":
            piece = "\\\\"
        elif ch.isprintable() or ch == " ":
            piece = ch
        elif ord(ch) < 0x100:
            piece = f"\\x{ord(ch):02x}"
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            piece = f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
        else:
            piece = ch
        if size + len(piece) > limit:
            return "".join(out) + "…"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def printable_tree(value: object, limit: int = MAX_OUTSIDE_TEXT) -> object:
    """A JSON value (an admin API answer) with every string in it, keys too, made `printable`."""
    if isinstance(value, str):
        return printable(value, limit)
    if isinstance(value, dict):
        return {printable(k, limit) if isinstance(k, str) else k: printable_tree(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_tree(v, limit) for v in value]
    return value


#: The longest log message kept whole once it had to be escaped, in characters.
MAX_LOG_TEXT = 2000


class PrintableLog(logging.Filter):
    """Keeps every log record's message one line of visible characters, whatever text from outside
    its arguments carry (the last guard: the places that log outside text escape it themselves).
    A traceback is not the message and keeps its lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format is the handler's to report, as without this filter
            return True
        if not message.isprintable():
            record.msg, record.args = printable(message, MAX_LOG_TEXT), None
        return True
