"""Units every side shares."""

from __future__ import annotations

Phases3 = tuple[float, float, float]
"""A current per phase (A), in the grid's order L1, L2, L3 (indices 0, 1, 2)."""
