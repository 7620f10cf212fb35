"""The attack bench's tally: one row per kind of attack, its verdict against its target, the four totals.

Pure: rows in, verdicts and text out (no I/O, no clock), so the tests can check the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# The four figures every run is judged by, each with its target of 0.
SESSIONS = "sessions of others touched"
FUSE = "grid current above the fuse (A)"
TRAPS = "lights trapped"
TOKENLESS = "API calls accepted without a valid token"
TOTALS = (SESSIONS, FUSE, TRAPS, TOKENLESS)

Verdict = Literal["PASS", "FAIL", "SKIP"]


@dataclass(frozen=True)
class Row:
    """What one kind of attack did: `attacks` tries, `value` the bad outcomes (or a figure), `target` the bound.

    `value` passes when it is at most `target` (`at_least=False`) or at least `target` (`at_least=True`);
    None means the attack could not be run (SKIP, with `outcome` saying why). `total` names the
    headline figure the row adds its `value` to, if any.
    """

    finding: str
    kind: str
    attacks: int
    value: float | None
    target: float
    outcome: str
    at_least: bool = False
    total: str | None = None
    unit: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.value is None:
            return "SKIP"
        ok = self.value >= self.target if self.at_least else self.value <= self.target
        return "PASS" if ok else "FAIL"


def totals(rows: Iterable[Row]) -> dict[str, float]:
    """The four headline figures: counts add up; the fuse figure is the worst excess (A) of any row."""
    out = dict.fromkeys(TOTALS, 0.0)
    for row in rows:
        if row.total is None or row.value is None:
            continue
        out[row.total] = (
            max(out[row.total], row.value)
            if row.total == FUSE
            else out[row.total] + row.value
        )
    return out


def attacks_by_finding(rows: Iterable[Row]) -> dict[str, int]:
    """How many attacks were run per finding, in the order the findings first appear."""
    out: dict[str, int] = {}
    for row in rows:
        out[row.finding] = out.get(row.finding, 0) + row.attacks
    return out


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def render(rows: list[Row], *, title: str) -> str:
    """The report as plain text: per finding the attacks run, each row with its verdict, then the totals."""
    lines = [title, ""]
    counts = attacks_by_finding(rows)
    lines.append(f"attacks run: {sum(counts.values())} in {len(rows)} kinds")
    lines.append("  " + ", ".join(f"{finding}: {n}" for finding, n in counts.items()))
    lines.append("")
    for finding in counts:
        for row in (r for r in rows if r.finding == finding):
            shown = "-" if row.value is None else _number(row.value) + row.unit
            bound = (">= " if row.at_least else "<= ") + _number(row.target) + row.unit
            lines.append(
                f"[{row.verdict}] {finding:>3} {row.kind}: {shown} (target {bound}; {row.attacks} attacks)"
            )
            lines.append(f"        {row.outcome}")
    lines.append("")
    lines.append("totals (target 0 each):")
    fails = 0
    for name, value in totals(rows).items():
        verdict = "PASS" if value <= 0 else "FAIL"
        fails += verdict == "FAIL"
        lines.append(f"  [{verdict}] {name}: {_number(value)}")
    failed_rows = sum(r.verdict == "FAIL" for r in rows)
    skipped = sum(r.verdict == "SKIP" for r in rows)
    lines.append(
        f"rows: {len(rows) - failed_rows - skipped} PASS, {failed_rows} FAIL, {skipped} SKIP; totals failing: {fails}"
    )
    return "\n".join(lines)
