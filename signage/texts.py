"""What a bay sign says for each light: a short text per colour, reason and language, and its pictogram.

Colour is never the only cue (signage.md, invariant 2), so every blue or green light has a text.
"""

from __future__ import annotations

from drivers.contract.words import COLORS

LANGUAGES = frozenset({"nl", "en"})
MAX_TEXT_CHARS = 24  # what a bay sign shows on one line

PICTOGRAMS = {"blue": "charging", "green": "parking", "off": "none"}

_TEXTS: dict[str, dict[tuple[str, str], str]] = {
    "nl": {
        ("blue", "plugged"): "Alleen opladen",
        ("blue", "charging"): "Alleen opladen",
        ("blue", "reserved"): "Alleen elektrisch laden",
        ("blue", "finished"): "Opladen klaar",
        ("green", "open"): "Vrij parkeren",
        ("green", "finished"): "Parkeren toegestaan",
        ("green", "fault"): "Parkeren toegestaan",
    },
    "en": {
        ("blue", "plugged"): "EV charging only",
        ("blue", "charging"): "EV charging only",
        ("blue", "reserved"): "Electric vehicles only",
        ("blue", "finished"): "Charging complete",
        ("green", "open"): "Parking for everyone",
        ("green", "finished"): "Parking allowed",
        ("green", "fault"): "Parking allowed",
    },
}

# Overrides, closures and any reason without its own text say what the colour means.
_BY_COLOR: dict[str, dict[str, str]] = {
    "nl": {"blue": "Alleen elektrisch laden", "green": "Parkeren toegestaan", "off": ""},
    "en": {"blue": "Electric vehicles only", "green": "Parking allowed", "off": ""},
}


def text_for(color: str, reason: str, language: str) -> str:
    """The sign's text for a light (at most MAX_TEXT_CHARS characters); empty only for `off`."""
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {sorted(LANGUAGES)}")
    if color not in COLORS:
        raise ValueError(f"colour {color!r} is not one of {sorted(COLORS)}")
    if color == "off":
        return ""
    return _TEXTS[language].get((color, reason), _BY_COLOR[language][color])


def pictogram_for(color: str) -> str:
    """The pictogram shown with a colour: `charging` with blue, `parking` with green, `none` with off."""
    try:
        return PICTOGRAMS[color]
    except KeyError:
        raise ValueError(f"colour {color!r} is not one of {sorted(COLORS)}") from None
