"""The console's screen as a pure function: `render` turns the admin API's last answers and the
screen size into a rich renderable, roomy panels when they fit, else a dense compact grid.
"""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.cells import cell_len, set_cell_size
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.styled import Styled
from rich.table import Table
from rich.text import Text

from drivers.contract.clock import parse_ts
from drivers.contract.text import printable_tree
from drivers.contract.words import BLUE, GREEN, OFF

CONNECTED = "connected"  # `connection` for a daemon that answered the last poll
CONNECTING = "connecting"  # before its first answer; any other `connection` is the banner's text

LIGHTS = {BLUE: ("BLUE", "white on blue"), GREEN: ("GREEN", "black on green"), OFF: ("OFF", "dim")}
UNKNOWN_LIGHT = ("UNKNOWN", "dim")
COMPACT_BLOCK_W = 26  # cells per bay block: "SuspendedEVSE 16.0/32 A" and a sign's 24-character text fit
ROOMY_BLOCK_W, ROOMY_BLOCK_H = 30, 7  # 4 bays to a row at 120 columns
ROOMY_MIN_W, ROOMY_MIN_H = 110, 36
HELP = (
    "q  quit        ?  show or hide this help",
    "BLUE     only electric vehicles, and only while charging",
    "GREEN    anyone may park",
    "OFF      light switched off      UNKNOWN  no light command yet",
    "Bay:     id LIGHT reason / the sign's text / connector status current/limit A",
    "Grid:    each phase's current against the connection's limit, OVER above it",
    "Dimmed:  the daemon does not answer; the last known state is shown",
)


def render(
    status: dict | None,
    alarms: list,
    events: list,
    *,
    width: int,
    height: int,
    connection: str,
    help_shown: bool,
    now_local: str,
) -> RenderableType:
    """The whole screen for `width` x `height` cells: roomy panels when they fit, else a dense compact grid."""
    # Chargers' words (vendor names, error info) ride in these answers: an ESC or a line break in
    # them must not reach the terminal (rich keeps ESC, and a line break breaks the layout).
    status, alarms, events = printable_tree(status), printable_tree(alarms), printable_tree(events)
    tz = (status or {}).get("timezone") or "UTC"
    top = [_header(status, width, connection, now_local)]
    if connection != CONNECTED:
        top.append(_banner(connection, width))
    budget = height - len(top)
    body = None
    if width >= ROOMY_MIN_W and height >= ROOMY_MIN_H:
        body = _roomy(status, alarms, events, tz, width, budget, help_shown)
    if body is None:
        body = _compact(status, alarms, events, tz, width, budget, help_shown)
    if connection != CONNECTED:
        body = Styled(body, "dim")
    return Group(*top, body)


def _fit(text: str, width: int) -> str:
    """`text` cut or padded to exactly `width` cells; an ellipsis marks a cut."""
    if width <= 0:
        return ""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def _line(*parts) -> Text:
    """One screen line that never wraps (cut with an ellipsis instead)."""
    return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")


def _amps(a: float | None) -> str:
    """A current in A with one decimal, or "-"."""
    return "-" if a is None else f"{a:.1f}"


def _limit(a: float | None) -> str:
    """A limit in A without a needless ".0", or "-"."""
    return "-" if a is None else f"{a:g}"


def zone_or_utc(tz: str) -> ZoneInfo:
    """The time zone named `tz`, or UTC when there is no such zone."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _clock(ts: str | None, tz: str, *, date: bool = False) -> str:
    """A wire time as the square's local wall clock."""
    if not ts:
        return "-"
    try:
        local = parse_ts(ts).astimezone(zone_or_utc(tz))
    except ValueError:
        return ts
    return local.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _light(bay: dict) -> tuple[str, str]:
    """The light as a word, and the block style in its colour."""
    return LIGHTS.get(bay.get("light") or "", UNKNOWN_LIGHT)


def _header(status: dict | None, width: int, connection: str, now_local: str) -> Text:
    site = (status or {}).get("site") or "-"
    left = Text.assemble(("laadplein ", "bold"), (site, "bold cyan"), f"  {now_local}")
    state = ("● connected", "green") if connection == CONNECTED else ("○ NOT CONNECTED", "bold red")
    right = Text.assemble(state, "   ? help  q quit")
    if left.cell_len + right.cell_len + 1 > width:
        right = Text.assemble(state)
    left.append(" " * max(1, width - left.cell_len - right.cell_len))
    return _line(left, right)


def _banner(connection: str, width: int) -> Text:
    message = "connecting to the daemon …" if connection == CONNECTING else connection
    return _line((_fit(" " + message, width), "bold black on yellow"))


def _alarm_lines(alarms: list, tz: str, room: int) -> list[Text]:
    """Active alarms, newest first, each with the word ALARM; at most `room` lines."""
    if not alarms:
        return [_line(("Alarms: none active", "dim"))] if room > 0 else []
    shown = alarms if len(alarms) <= room else alarms[: max(room - 1, 0)]
    lines = []
    for a in shown:
        where = " ".join(x for x in (a.get("bay"), a.get("charger")) if x)
        action = f" -> {a['action']}" if a.get("action") else ""
        said = f" {_clock(a.get('since'), tz)} {where + ': ' if where else ''}{a.get('message', '')}{action}"
        lines.append(_line((" ALARM ", "bold white on red"), (said, "bold red")))
    if len(shown) < len(alarms) and room > 0:
        lines.append(_line((f" ALARM +{len(alarms) - len(shown)} more active alarms", "bold red")))
    return lines


def _phases(grid: dict, bar_w: int | None, width: int) -> list[Text]:
    """Each phase's current as a bar against the limit (`L1 ████████░░ 41.0/80 A`)."""
    limit = grid.get("limit_a") or 0
    currents = grid.get("current_a") or []
    labels = [f" {a:.1f}/{_limit(limit)} A" + (" OVER" if limit and a > limit else "") for a in currents]
    if bar_w is None:  # all phases on one line after "Grid "
        fixed = sum(3 + len(label) for label in labels) + 2 * (len(labels) - 1) + 5
        bar_w = max(3, min(10, (width - fixed) // max(len(labels), 1)))
    out = []
    for i, (a, label) in enumerate(zip(currents, labels), 1):
        frac = a / limit if limit else 0.0
        filled = max(0, min(bar_w, round(frac * bar_w)))
        style = "bold red" if frac > 1 else "yellow" if frac >= 0.9 else "green"
        bar = [("█" * filled, style), ("░" * (bar_w - filled), "dim")]
        out.append(Text.assemble(f"L{i} ", *bar, (label, style if frac > 1 else "")))
    return out


def _battery(bat: dict | None) -> Text:
    if bat is None:
        return Text("none")
    if not bat.get("online"):
        return Text("OFFLINE", "bold red")
    soc, power_w = bat.get("soc_pct"), bat.get("power_w")
    state = "idle" if power_w is None or abs(power_w) < 50 else "discharging" if power_w > 0 else "charging"
    soc_text = "SoC ?" if soc is None else f"{soc:.0f}%"
    power = "? kW" if power_w is None else f"{power_w / 1000:+.1f} kW"
    return Text(f"{soc_text} {power} {state}")


def _ocpp(version: str | None) -> str:
    return "OCPP " + version.removeprefix("ocpp") if version else "OCPP ?"


def _chargers(chargers: list) -> Text:
    online = [c for c in chargers if c.get("online")]
    versions = sorted({_ocpp(c.get("ocpp")) for c in online})
    text = Text(f"{len(online)}/{len(chargers)} online" + (f" ({', '.join(versions)})" if versions else ""))
    offline = [c["id"] for c in chargers if not c.get("online")]
    if offline:
        text.append(f" OFFLINE: {', '.join(offline)}", "bold red")
    return text


def _event_line(e: dict, tz: str, *, roomy: bool) -> Text:
    where = e.get("bay") or e.get("charger") or ""
    kind = f" {e.get('kind', ''):<20.20}" if roomy else ""
    return _line((_clock(e.get("ts"), tz, date=roomy), "cyan"), kind, f" {where:<5} ", e.get("message") or "")


def _bay_lines(bay: dict, lines: int) -> list[str]:
    """A bay block's lines, most telling first: id, light word and reason; text; status and amps."""
    word, _ = _light(bay)
    amps = f"{_amps(bay.get('current_a'))}/{_limit(bay.get('limit_a'))} A"
    status = bay.get("status") or "unknown"
    head = f"{bay['id']} {word} {bay.get('reason') or ''}".rstrip()
    if lines >= 3:
        return [head, bay.get("text") or "(no text)", f"{status} {amps}"]
    if lines == 2:
        return [head, f"{status} {amps}"]
    return [f"{bay['id']} {word} {status} {amps}"]


def _compact_bays(bays: list, width: int, room: int) -> list[Text]:
    """Bays as a dense grid of coloured blocks, 3, 2 or 1 lines each, whichever fits `room` lines."""
    if not bays or room <= 0:
        return []
    cols = max(1, min(len(bays), width // COMPACT_BLOCK_W))
    block_w = width // cols
    rows = math.ceil(len(bays) / cols)
    per = next((n for n in (3, 2, 1) if rows * n <= room), 1)
    fits = rows if rows * per <= room else max(room - 1, 0)
    out = []
    for r in range(fits):
        row = bays[r * cols : (r + 1) * cols]
        blocks = [(_bay_lines(b, per), _light(b)[1]) for b in row]
        for k in range(per):
            parts = []
            for lines, style in blocks:
                parts += [(_fit(lines[k], block_w - 1), style + (" bold" if k == 0 else "")), " "]
            out.append(_line(*parts))
    if fits < rows:
        out.append(_line((f"+{len(bays) - fits * cols} more bays: enlarge the terminal to see them", "bold")))
    return out


def _compact(status, alarms, events, tz, width, room, help_shown) -> RenderableType:
    if status is None:
        lines = [_line(("No answer from the daemon yet.", "bold"))]
        lines += _alarm_lines(alarms, tz, 3)
        bays = []
    else:
        lines = _alarm_lines(alarms, tz, 3)
        bays = status.get("bays") or []
        lines_after = [
            _line("Grid ", *_join(_phases(status.get("grid") or {}, None, width), "  ")),
            _line("Battery ", _battery(status.get("battery")),
                  " │ Chargers ", _chargers(status.get("chargers") or [])),
        ]
        bay_room = room - len(lines) - len(lines_after) - 3  # keep a few lines for events
        lines += _compact_bays(bays, width, bay_room) + lines_after
    left = room - len(lines)
    if left >= 2:
        title = " help " if help_shown else " events "
        lines.append(_line(("──" + title + "─" * max(0, width - len(title) - 2), "dim")))
        tail = [_line(h) for h in HELP] if help_shown else [_event_line(e, tz, roomy=False) for e in events]
        lines += tail[: left - 1] if help_shown else tail[-(left - 1):]
    return Group(*lines[: max(room, 0)])


def _join(parts: list[Text], sep: str) -> list:
    out: list = []
    for i, p in enumerate(parts):
        out += [sep, p] if i else [p]
    return out


def _bay_panel(bay: dict, width: int) -> Panel:
    word, style = _light(bay)
    occupied = {True: "bay occupied", False: "bay empty"}.get(bay.get("occupied"), "occupancy unknown")
    lines = [
        _line((f"{word} · {bay.get('reason') or '-'}", "bold")),
        _line(bay.get("text") or "(no text)"),
        _line(f"{bay.get('charger')}/{bay.get('connector')} {bay.get('status') or 'unknown'}"),
        _line(f"{_amps(bay.get('current_a'))} A of limit {_limit(bay.get('limit_a'))} A"),
        _line(occupied),
    ]
    return Panel(Group(*lines), title=f"[bold]{bay['id']}[/]", title_align="left", style=style, border_style=style,
                 width=width, height=ROOMY_BLOCK_H, padding=(0, 1))


def _charger_grid(chargers: list, width: int, lines: int) -> list[Text]:
    """Each charger with its state and OCPP version ("CP01 1.6", "CP02 2.0.1", "CP03 OFFLINE"), as many
    to a line as fit; the summary line when they do not all fit."""
    cell_w = max(len(c["id"]) for c in chargers) + 9 if chargers else 0
    per_line = max(1, (width + 2) // (cell_w + 2)) if cell_w else 1
    if math.ceil(len(chargers) / per_line) > lines:
        return [Text(_chargers(chargers).plain, no_wrap=False)]
    out = []
    for i in range(0, len(chargers), per_line):
        parts: list = []
        for c in chargers[i : i + per_line]:
            state = (_ocpp(c.get("ocpp")).removeprefix("OCPP "), "") if c.get("online") else ("OFFLINE", "bold red")
            parts += [f"{c['id']} ", state, " " * (cell_w - len(c["id"]) - 1 - len(state[0]) + 2)]
        out.append(_line(*parts))
    return out


def _roomy(status, alarms, events, tz, width, room, help_shown) -> RenderableType | None:
    """Bays as panels with a grid/battery/chargers row and an events panel; None when it does not fit."""
    if status is None:
        return None
    alarm_lines = _alarm_lines(alarms, tz, 5)
    bays = status.get("bays") or []
    cols = max(1, width // ROOMY_BLOCK_W)
    rows = math.ceil(len(bays) / cols)
    middle_h = 5
    events_h = room - len(alarm_lines) - rows * ROOMY_BLOCK_H - middle_h
    if events_h < 5:
        return None
    grid = Table.grid()
    for _ in range(min(cols, len(bays)) or 1):
        grid.add_column(width=ROOMY_BLOCK_W)
    for r in range(rows):
        grid.add_row(*(_bay_panel(b, ROOMY_BLOCK_W) for b in bays[r * cols : (r + 1) * cols]))
    g = status.get("grid") or {}
    chargers = status.get("chargers") or []
    grid_w, battery_w = width * 2 // 5, width // 4
    charger_lines = _charger_grid(chargers, width - grid_w - battery_w - 4, middle_h - 2)
    middle = Table.grid()
    phases = Group(*(_line(p) for p in _phases(g, 20, width)))
    middle.add_row(
        Panel(phases, title=f"Grid (limit {_limit(g.get('limit_a'))} A per phase)", title_align="left",
              width=grid_w, height=middle_h),
        Panel(_line(_battery(status.get("battery"))), title="Battery", title_align="left",
              width=battery_w, height=middle_h),
        Panel(Group(*charger_lines), title="Chargers · OCPP", title_align="left",
              width=width - grid_w - battery_w, height=middle_h),
    )
    if help_shown:
        inner = [_line(h) for h in HELP]
    else:
        inner = [_event_line(e, tz, roomy=True) for e in events][-(events_h - 2):]
    bottom = Panel(Group(*inner), title="Help" if help_shown else "Events", title_align="left",
                   width=width, height=events_h)
    return Group(*alarm_lines, grid, middle, bottom)
