"""How the operator's commands show the admin API's answers, and read the times people type.

Times go both ways in the square's time zone. Colour is never the only cue: every light is
also written as a word.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drivers.contract.clock import parse_ts
from drivers.contract.text import printable_tree
from drivers.contract.words import BLUE, GREEN, OFF

LIGHT_STYLE = {BLUE: "bold white on blue", GREEN: "bold black on green", OFF: "dim"}
WHEN_EXAMPLES = "2026-11-28T13:05:00Z, 2026-11-28 13:05, 2026-11-28, 13:05 (today), or 10m, 2h, 3d back from now"
_SPAN = re.compile(r"(\d+)([smhdw])")
_SPAN_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def local_time(ts: str | None, tz: str) -> str:
    """A wire time shown in the square's time zone."""
    if not ts:
        return "-"
    local = parse_ts(ts).astimezone(ZoneInfo(tz))
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    # the hour the clocks go back happens twice: say which one
    other = local.replace(fold=1 - local.fold)
    return f"{text} {local.strftime('%Z')}" if other.utcoffset() != local.utcoffset() else text


def zone_note(tz: str) -> str:
    """The once-per-output note saying which zone the times are in."""
    return f"times in {tz}"


@dataclass(frozen=True)
class When:
    """A moment as an operator typed it; exactly one field is set.

    `at`: an ISO time with Z or an offset; `local`: a date or date and time in the square's zone;
    `clock`: a time of day, today in the square's zone; `back_s`: a span back from now (s).
    """

    at: datetime | None = None
    local: datetime | None = None
    clock: time | None = None
    back_s: int | None = None

    def utc(self, tz: str, now: datetime) -> datetime:
        """The moment in UTC, with `now` (aware) for spans and for "today"."""
        zone = ZoneInfo(tz)
        if self.at is not None:
            return self.at.astimezone(UTC)
        if self.local is not None:
            return self.local.replace(tzinfo=zone).astimezone(UTC)
        if self.clock is not None:
            today = now.astimezone(zone).date()
            return datetime.combine(today, self.clock, tzinfo=zone).astimezone(UTC)
        assert self.back_s is not None
        return now.astimezone(UTC) - timedelta(seconds=self.back_s)


def read_when(text: str) -> When:
    """Read a --since value; ValueError (with examples) when it is none of the accepted forms."""
    word = text.strip()
    if word and _SPAN.sub("", word) == "":
        return When(back_s=sum(int(n) * _SPAN_S[unit] for n, unit in _SPAN.findall(word)))
    m = _CLOCK.fullmatch(word)
    if m:
        hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"{text!r} is not a time of day: give e.g. {WHEN_EXAMPLES}")
        return When(clock=time(hour, minute, second))
    try:
        dt = datetime.fromisoformat(word[:-1] + "+00:00" if word.endswith(("Z", "z")) else word)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time: give e.g. {WHEN_EXAMPLES}") from None
    return When(at=dt) if dt.tzinfo is not None else When(local=dt)


def _light(word: str | None) -> str:
    if not word:
        return "[dim]unknown[/]"
    return f"[{LIGHT_STYLE.get(word, '')}] {escape(word.upper())} [/]"


def _bay_table(bays: list[dict], tz: str) -> Table:
    held = any(b.get("override") for b in bays)
    t = Table(title=f"Bays ({zone_note(tz)})" if held else "Bays")
    columns = ["bay", "light", "reason", "charger", "status", "occupied", "current A", "limit A"]
    for col in columns + (["override"] if held else []):
        t.add_column(col)
    for b in bays:
        occ = {True: "yes", False: "no", None: "-"}.get(b.get("occupied"), "-")
        cur = "-" if b.get("current_a") is None else f"{b['current_a']:.1f}"
        lim = "-" if b.get("limit_a") is None else f"{b['limit_a']:.1f}"
        row = [escape(b["id"]), _light(b.get("light")), escape(b.get("reason") or "-"),
               escape(f"{b['charger']}/{b['connector']}"), escape(b.get("status") or "unknown"), occ, cur, lim]
        if held:
            o = b.get("override")
            row.append(escape(f"{o['color'].upper()} until {local_time(o['until'], tz)}") if o else "-")
        t.add_row(*row)
    return t


def _battery_text(bat: dict | None) -> str:
    if bat is None:
        return "battery: none configured"
    if not bat.get("online"):
        return "battery: OFFLINE" + (f" ({bat['reason']})" if bat.get("reason") else "")
    soc = "" if bat.get("soc_pct") is None else f", SoC {bat['soc_pct']:.0f} %"
    power_w = bat.get("power_w")
    if power_w is None or power_w == 0:
        flow = ", idle" if power_w == 0 else ""
    else:
        flow = f", {'discharging' if power_w > 0 else 'charging'} {abs(power_w) / 1000:.1f} kW"
    return f"battery: online{soc}{flow}"


def print_status(snapshot: dict, alarms: list[dict], console: Console | None = None) -> None:
    console = console or Console()
    snapshot, alarms = printable_tree(snapshot), printable_tree(alarms)  # chargers' words: no raw ESC or line break
    tz = snapshot.get("timezone") or "UTC"
    console.print(f"[bold]{escape(snapshot['site'])}[/]  {local_time(snapshot['ts'], tz)} ({zone_note(tz)})")
    grid = snapshot["grid"]
    phases = "  ".join(f"L{i + 1} {a:.1f} A" for i, a in enumerate(grid["current_a"]))
    console.print(f"grid: {phases}  (limit {grid['limit_a']:g} A per phase)")
    console.print(escape(_battery_text(snapshot.get("battery"))))
    online = [c for c in snapshot["chargers"] if c["online"]]
    offline = [c["id"] for c in snapshot["chargers"] if not c["online"]]
    console.print(escape(f"chargers: {len(online)}/{len(snapshot['chargers'])} online" + (f"; offline: {', '.join(offline)}" if offline else "")))
    if alarms:
        for a in alarms:
            console.print(f"[bold red]ALARM[/] since {local_time(a['since'], tz)}: {escape(a['message'])} -> {escape(a['action'] or '-')}")
    else:
        console.print("alarms: none")
    console.print(_bay_table(snapshot["bays"], tz))


def print_bays(bays: list[dict], tz: str, console: Console | None = None) -> None:
    (console or Console()).print(_bay_table(printable_tree(bays), tz))


def events_header(tz: str) -> str:
    return f"Events ({zone_note(tz)})"


def event_line(event: dict, tz: str) -> str:
    """One event as a line of plain text (no markup), the words of chargers in it escaped."""
    event = printable_tree(event)
    return f"{local_time(event['ts'], tz)}  {event['kind']:<20} {event['message']}"


def print_event_lines(events: list[dict], tz: str, console: Console) -> None:
    for e in events:
        # soft_wrap: a piped line stays one line, whatever the terminal width
        console.print(event_line(e, tz), markup=False, highlight=False, soft_wrap=True)


def print_sessions(sessions: list[dict], tz: str, console: Console | None = None) -> None:
    t = Table(title=f"Sessions ({zone_note(tz)})")
    for col in ("id", "bay", "charger", "started", "stopped", "kWh", "tag"):
        t.add_column(col)
    for s in printable_tree(sessions):
        kwh = "-" if s.get("energy_wh") is None else f"{s['energy_wh'] / 1000:.2f}"
        tag = s.get("tag_hash")
        t.add_row(escape(str(s["id"])), escape(s.get("bay") or "-"), escape(f"{s['charger']}/{s['connector']}"),
                  local_time(s["started"], tz), local_time(s.get("stopped"), tz), kwh, escape(tag[:8] + "…") if tag else "-")
    (console or Console()).print(t)


def answer_text(answer: Any) -> tuple[str, str]:
    """A charger's answer payload as (status, words): the status and any reason it gave."""
    answer = printable_tree(answer)
    if not isinstance(answer, dict):
        return "", f"answered {answer!r}"
    status = str(answer.get("status", ""))
    info = answer.get("statusInfo")
    if isinstance(info, dict) and info.get("reasonCode"):
        extra = f" ({info['reasonCode']}" + (f": {info['additionalInfo']}" if info.get("additionalInfo") else "") + ")"
        return status, status + extra
    return status, status or f"answered {json.dumps(answer)}"
