"""What a bay sign says for each light: a short text per colour, reason and language, and its pictogram.

Colour is never the only cue (signage.md, invariant 2), so every blue or green light has a text.
"""

from __future__ import annotations

from drivers.contract.words import BLUE, COLORS, GREEN, OFF

LANGUAGES = frozenset({"nl", "en"})
MAX_TEXT_CHARS = 24  # what a bay sign shows on one line

PICTOGRAMS = {BLUE: "charging", GREEN: "parking", OFF: "none"}

_TEXTS: dict[str, dict[tuple[str, str], str]] = {
    "nl": {
        (BLUE, "plugged"): "Alleen opladen",
        (BLUE, "charging"): "Alleen opladen",
        (BLUE, "reserved"): "Alleen elektrisch laden",
        (BLUE, "finished"): "Opladen klaar",
        (GREEN, "open"): "Vrij parkeren",
        (GREEN, "finished"): "Parkeren toegestaan",
        (GREEN, "fault"): "Parkeren toegestaan",
    },
    "en": {
        (BLUE, "plugged"): "EV charging only",
        (BLUE, "charging"): "EV charging only",
        (BLUE, "reserved"): "Electric vehicles only",
        (BLUE, "finished"): "Charging complete",
        (GREEN, "open"): "Parking for everyone",
        (GREEN, "finished"): "Parking allowed",
        (GREEN, "fault"): "Parking allowed",
    },
}

# Overrides, closures and any reason without its own text say what the colour means.
_BY_COLOR: dict[str, dict[str, str]] = {
    "nl": {BLUE: "Alleen elektrisch laden", GREEN: "Parkeren toegestaan", OFF: ""},
    "en": {BLUE: "Electric vehicles only", GREEN: "Parking allowed", OFF: ""},
}


def text_for(color: str, reason: str, language: str) -> str:
    """The sign's text for a light (at most MAX_TEXT_CHARS characters); empty only for `off`."""
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {sorted(LANGUAGES)}")
    if color not in COLORS:
        raise ValueError(f"colour {color!r} is not one of {sorted(COLORS)}")
    if color == OFF:
        return ""
    return _TEXTS[language].get((color, reason), _BY_COLOR[language][color])


def pictogram_for(color: str) -> str:
    """The pictogram shown with a colour: `charging` with blue, `parking` with green, `none` with off."""
    try:
        return PICTOGRAMS[color]
    except KeyError:
        raise ValueError(f"colour {color!r} is not one of {sorted(COLORS)}") from None
