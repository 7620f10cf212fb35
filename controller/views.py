"""Plain rich renderings of the admin API's answers for the operator's commands.

Colour is never the only cue: every light is also written as a word.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from controller.clock import parse_ts

LIGHT_STYLE = {"blue": "bold white on blue", "green": "bold black on green", "off": "dim"}


def local_time(ts: str | None, tz: str) -> str:
    """A wire time shown in the square's time zone."""
    if not ts:
        return "-"
    return parse_ts(ts).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _light(word: str | None) -> str:
    if not word:
        return "[dim]unknown[/]"
    return f"[{LIGHT_STYLE.get(word, '')}] {word.upper()} [/]"


def _bay_table(bays: list[dict]) -> Table:
    t = Table(title="Bays")
    for col in ("bay", "light", "reason", "charger", "status", "occupied", "current A", "limit A"):
        t.add_column(col)
    for b in bays:
        occ = {True: "yes", False: "no", None: "-"}[b.get("occupied")]
        cur = "-" if b.get("current_a") is None else f"{b['current_a']:.1f}"
        lim = "-" if b.get("limit_a") is None else f"{b['limit_a']:.1f}"
        t.add_row(b["id"], _light(b.get("light")), b.get("reason") or "-", f"{b['charger']}/{b['connector']}",
                  b.get("status") or "unknown", occ, cur, lim)
    return t


def print_status(snapshot: dict, alarms: list[dict]) -> None:
    console = Console()
    tz = snapshot.get("timezone") or "UTC"
    console.print(f"[bold]{snapshot['site']}[/]  {local_time(snapshot['ts'], tz)} ({tz})")
    grid = snapshot["grid"]
    phases = "  ".join(f"L{i + 1} {a:.1f} A" for i, a in enumerate(grid["current_a"]))
    console.print(f"grid: {phases}  (limit {grid['limit_a']:g} A per phase)")
    bat = snapshot.get("battery")
    console.print("battery: none configured" if bat is None else f"battery: {'online' if bat.get('online') else 'OFFLINE'}")
    online = [c for c in snapshot["chargers"] if c["online"]]
    offline = [c["id"] for c in snapshot["chargers"] if not c["online"]]
    console.print(f"chargers: {len(online)}/{len(snapshot['chargers'])} online" + (f"; offline: {', '.join(offline)}" if offline else ""))
    if alarms:
        for a in alarms:
            console.print(f"[bold red]ALARM[/] since {local_time(a['since'], tz)}: {a['message']} -> {a['action']}")
    else:
        console.print("alarms: none")
    console.print(_bay_table(snapshot["bays"]))


def print_bays(bays: list[dict]) -> None:
    Console().print(_bay_table(bays))


def print_events(events: list[dict], tz: str) -> None:
    console = Console()
    for e in events:
        console.print(f"{local_time(e['ts'], tz)}  {e['kind']:<20} {e['message']}", highlight=False)


def print_sessions(sessions: list[dict], tz: str) -> None:
    t = Table(title="Sessions")
    for col in ("id", "bay", "charger", "started", "stopped", "kWh", "tag"):
        t.add_column(col)
    for s in sessions:
        kwh = "-" if s.get("energy_wh") is None else f"{s['energy_wh'] / 1000:.2f}"
        t.add_row(str(s["id"]), s.get("bay") or "-", f"{s['charger']}/{s['connector']}", local_time(s["started"], tz),
                  local_time(s.get("stopped"), tz), kwh, (s.get("tag_hash") or "")[:8] + "…")
    Console().print(t)
