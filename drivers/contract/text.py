"""Text from outside (a charger's boot strings and error info, an unknown charger's id, a sensor's
payload) made safe to log, store and show on a terminal: control characters escaped, length capped.

A charger can put an ESC sequence into its vendor name or a line break into its error info; shown
as is, the first reprograms the technician's terminal and the second forges a log line.
"""

from __future__ import annotations

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
