"""The operator's commands (status, bays, events, sessions, override, charger): each asks the running
daemon's admin API and prints for people in the square's time zone, or JSON with --json.

Exit codes (interfaces.md §1): 0 done, 1 the daemon or a charger could not do it, 2 bad usage or
config, 3 daemon not reachable, 4 refused (token).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import sleep
from typing import Any
from urllib.parse import urlencode

from rich.console import Console

from controller.cli import views
from controller.cli.client import (
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ApiClient,
    ClientError,
    quote_part,
)
from drivers.contract.clock import parse_ts, wire_ts
from drivers.contract.words import COLORS

EXIT_OK = 0
PAGE = 500  # rows asked per request (the API's default limit)
FOLLOW_POLL_S = 1.0
FOLLOW_FIRST = 10  # events shown when --follow starts without --since, as `tail -f` does
# Events reach the log a cycle after they happened (the cycle writes them), so a poll looks this far
# back behind the newest event it has seen and drops what it already printed.
FOLLOW_OVERLAP = timedelta(seconds=30)
OK_ANSWERS = {"Reset": ("Accepted", "Scheduled"), "UnlockConnector": ("Unlocked",), "TriggerMessage": ("Accepted",)}


def add_client_options(p: argparse.ArgumentParser) -> None:
    """The options of every command that asks the daemon (interfaces.md §1), and --json."""
    p.add_argument("--config", help="the square's config file (reads [api] and its token file)")
    p.add_argument("--api", help="the admin API's URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--token-file", help="file holding the admin API token (with --api, or instead of the config's)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def client_or_exit(args: argparse.Namespace) -> ApiClient:
    """The daemon's client, or an exit with the message and code of why it cannot be found."""
    try:
        return open_client(args)
    except ClientError as exc:
        print(f"laadplein {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def open_client(args: argparse.Namespace) -> ApiClient:
    """The daemon's client as interfaces.md §1 finds it; ClientError (exit 2) when it cannot be found."""
    return ApiClient.from_args(api=args.api, token_file=args.token_file, config=args.config)


def with_client(fn: Callable[[argparse.Namespace, ApiClient], int]) -> Callable[[argparse.Namespace], int]:
    """A command that talks to the daemon: a ClientError becomes its message and exit code."""

    @functools.wraps(fn)
    def command(args: argparse.Namespace) -> int:
        try:
            return fn(args, open_client(args))
        except ClientError as exc:
            print(f"laadplein {args.command}: {exc}", file=sys.stderr)
            return exc.exit_code

    return command


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _since(args: argparse.Namespace, client: ApiClient) -> datetime | None:
    if not args.since:
        return None
    try:
        when = views.read_when(args.since)
    except ValueError as exc:
        raise ClientError(f"--since: {exc}", EXIT_USAGE) from None
    return when.utc(client.timezone(), datetime.now(UTC))


# ---- status, bays, override ------------------------------------------------------------------


@with_client
def cmd_status(args, client) -> int:
    snapshot = client.get("/api/status")
    if args.json:
        _print_json(snapshot)
    else:
        views.print_status(snapshot, client.get("/api/alarms"))
    return EXIT_OK


@with_client
def cmd_bays(args, client) -> int:
    bays = client.get("/api/bays")
    if args.json:
        _print_json(bays)
    else:
        views.print_bays(bays, client.timezone())
    return EXIT_OK


@with_client
def cmd_override(args, client) -> int:
    path = f"/api/bays/{quote_part(args.bay)}/override"
    if args.clear:
        if args.color or args.minutes is not None:
            raise ClientError("give either COLOR --minutes N, or --clear", EXIT_USAGE)
        try:
            answer = client.request("DELETE", path + "?" + urlencode({"who": args.who or os.environ.get("USER", "")}), None)
        except ClientError as exc:
            if exc.status != 404 or not str(exc).endswith("has no override"):
                raise
            answer = {"bay": args.bay, "cleared": False}  # nothing to end: done all the same
        if args.json:
            _print_json(answer)
        else:
            print(f"bay {args.bay}: override cleared" if answer.get("cleared") else f"bay {args.bay} had no override")
        return EXIT_OK
    if args.color not in COLORS or args.minutes is None:
        raise ClientError("need COLOR (blue, green or off) and --minutes N, or --clear", EXIT_USAGE)
    body = {"color": args.color, "minutes": args.minutes, "who": args.who or os.environ.get("USER", ""), "why": args.why or ""}
    answer = client.request("PUT", path, body)
    if args.json:
        _print_json(answer)
    else:
        tz = client.timezone()
        until = views.local_time(answer["until"], tz)
        print(f"bay {args.bay}: held {answer['color'].upper()} until {until} ({tz}): {args.why or 'no reason given'}")
    return EXIT_OK


# ---- events and sessions ---------------------------------------------------------------------


@dataclass
class Cursor:
    """Where a listing has got to: the newest time seen and the rows already shown near it."""

    key: Callable[[dict], Any]
    ts_field: str = "ts"
    newest: datetime | None = None
    floor: datetime | None = None  # nothing older is wanted (the --since, or the first row shown)
    shown: dict[Any, datetime] = field(default_factory=dict)
    last_id: int | None = None  # events: the newest written that was shown (ids grow in write order)

    def window_start(self) -> datetime | None:
        if self.newest is None:
            return self.floor
        start = self.newest - FOLLOW_OVERLAP
        return start if self.floor is None else max(start, self.floor)

    def take(self, rows: list[dict]) -> list[dict]:
        """The rows not shown yet, oldest first; they count as shown from now on."""
        fresh = []
        for row in rows:
            k = self.key(row)
            if k in self.shown:
                continue
            at = parse_ts(row[self.ts_field])
            self.shown[k] = at
            fresh.append(row)
            if isinstance(row.get("id"), int):
                self.last_id = max(self.last_id or 0, row["id"])
            if self.newest is None or at > self.newest:
                self.newest = at
        start = self.window_start()
        if start is not None:
            self.shown = {k: at for k, at in self.shown.items() if at >= start}
        return sorted(fresh, key=lambda r: parse_ts(r[self.ts_field]))


def fetch(client: ApiClient, path: str, cursor: Cursor, since: datetime) -> list[dict]:
    """Every row at or after `since` the cursor has not shown, page after page."""
    rows_new: list[dict] = []
    while True:
        rows = client.get(path + "?" + urlencode({"since": wire_ts(since), "limit": PAGE}))
        rows_new += cursor.take(rows)
        if len(rows) < PAGE:
            return rows_new
        last = parse_ts(rows[-1][cursor.ts_field])
        if last <= since:  # a whole page of one instant: no way past it
            return rows_new
        since = last


def _event_key(e: dict) -> Any:
    return e["id"], e["ts"]


def _session_key(s: dict) -> Any:
    return s["charger"], s["connector"], str(s["id"]), s["started"]  # `id` is only the charger's own


@with_client
def cmd_events(args, client) -> int:
    since = _since(args, client)
    tz = client.timezone()
    cursor = Cursor(_event_key)
    if since is not None:
        events = fetch(client, "/api/events", cursor, since)
    else:
        events = cursor.take(client.get(f"/api/events?limit={FOLLOW_FIRST if args.follow else PAGE}"))
    console = Console(highlight=False)
    if not args.follow:
        if args.json:
            _print_json(events)
        else:
            console.print(views.events_header(tz), markup=False)
            views.print_event_lines(events, tz, console)
        return EXIT_OK
    # the look-back of a poll must not reach events older than those shown (the last ten, or --since)
    cursor.floor = since or (parse_ts(events[0]["ts"]) if events else datetime.now(UTC))
    if not args.json:
        console.print(views.events_header(tz) + "; following, Ctrl-C ends", markup=False)
    return _follow(args, client, cursor, events, tz, console)


def _follow(args, client: ApiClient, cursor: Cursor, events: list[dict], tz: str, console: Console) -> int:
    client.timeout_s = min(client.timeout_s, 5.0)  # a hung daemon counts as gone, not as a frozen screen
    lost = False
    try:
        while True:
            for e in events:
                if args.json:
                    print(json.dumps(e, ensure_ascii=False))
                else:
                    views.print_event_lines([e], tz, console)
            sys.stdout.flush()
            sleep(FOLLOW_POLL_S)
            try:
                events = _written_after(client, cursor)
            except ClientError as exc:
                if exc.exit_code != EXIT_UNREACHABLE:
                    raise
                if not lost:
                    print(f"laadplein events: daemon not reachable, retrying ({exc})", file=sys.stderr, flush=True)
                lost, events = True, []
                continue
            if lost:
                print("laadplein events: daemon reachable again", file=sys.stderr, flush=True)
                lost = False
    except KeyboardInterrupt:
        return EXIT_OK


def _written_after(client: ApiClient, cursor: Cursor) -> list[dict]:
    """The events written since the newest one shown, in the order they were written: an alarm's
    event is dated when the alarm began, which may be long before it is written."""
    if cursor.last_id is None:
        return fetch(client, "/api/events", cursor, cursor.window_start() or datetime.now(UTC))
    fresh: list[dict] = []
    while True:
        rows = client.get("/api/events?" + urlencode({"after_id": cursor.last_id, "limit": PAGE}))
        fresh += rows
        if rows:
            cursor.last_id = rows[-1]["id"]
        if len(rows) < PAGE:
            return fresh


@with_client
def cmd_sessions(args, client) -> int:
    since = _since(args, client)
    if since is not None:
        sessions = fetch(client, "/api/sessions", Cursor(_session_key, "started"), since)
    else:
        sessions = client.get("/api/sessions")
    if args.json:
        _print_json(sessions)
    else:
        views.print_sessions(sessions, client.timezone())
    return EXIT_OK


# ---- charger commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChargerRequest:
    """One OCPP request for a charger command, and its words for people."""

    action: str
    payload: dict
    what: str


def charger_requests(command: str, ocpp: str, connectors: list[int], *, connector: int | None, hard: bool) -> list[ChargerRequest]:
    """The requests a command makes in the charger's OCPP version ("ocpp1.6" or "ocpp2.0.1").

    `connectors`: the charger's connectors (EVSEs for 2.0.1). ValueError for a bad combination.
    """
    v201 = ocpp == "ocpp2.0.1"
    if ocpp not in ("ocpp1.6", "ocpp2.0.1"):
        raise ValueError(f"unknown OCPP version {ocpp!r}")
    if hard and command != "reset":
        raise ValueError("--hard/--now go with reset only")
    if connector is not None:
        if command == "reset":
            raise ValueError("reset resets the whole charger: no --connector")
        if connector not in connectors:
            span = f"{min(connectors)}-{max(connectors)}" if connectors else "none"
            raise ValueError(f"no {'EVSE' if v201 else 'connector'} {connector} (this charger has {span})")
    if command == "reset":
        kind = ("Immediate" if hard else "OnIdle") if v201 else ("Hard" if hard else "Soft")
        return [ChargerRequest("Reset", {"type": kind}, f"Reset {kind}")]
    if command == "unlock":
        if connector is None:
            raise ValueError("unlock needs --connector N" + (" (the EVSE)" if v201 else ""))
        if v201:
            return [ChargerRequest("UnlockConnector", {"evseId": connector, "connectorId": 1}, f"UnlockConnector EVSE {connector}")]
        return [ChargerRequest("UnlockConnector", {"connectorId": connector}, f"UnlockConnector connector {connector}")]
    if command == "trigger-status":
        if v201:
            return [
                ChargerRequest("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": n, "connectorId": 1}},
                               f"TriggerMessage StatusNotification EVSE {n}")
                for n in ([connector] if connector is not None else sorted(connectors))
            ]
        payload: dict = {"requestedMessage": "StatusNotification"}
        if connector is not None:
            payload["connectorId"] = connector
        where = f" connector {connector}" if connector is not None else ""
        return [ChargerRequest("TriggerMessage", payload, f"TriggerMessage StatusNotification{where}")]
    raise ValueError(f"unknown charger command {command!r}")


def _failure(req: ChargerRequest, exc: ClientError, body: dict) -> str:
    """Why a request to a charger came to nothing, in words."""
    if exc.status == 409:
        return "not connected, nothing sent"
    if exc.status == 502:
        return f"{req.what} refused with CALLERROR {body.get('code', '?')}: {body.get('description') or 'no description'}"
    if exc.status == 504:
        return f"{req.what}: no answer in time"
    return f"{req.what}: {exc}"


@with_client
def cmd_charger(args, client) -> int:
    chargers = client.get("/api/chargers")
    found = next((c for c in chargers if c["id"] == args.id), None)
    if found is None:
        known = ", ".join(c["id"] for c in chargers) or "none"
        raise ClientError(f"no charger {args.id!r} (this square has {known})", EXIT_USAGE)
    if not found.get("ocpp"):
        raise ClientError(f"charger {args.id} is not connected (not since the daemon started)", EXIT_FAILED)
    connectors = sorted(int(k["connector"]) for k in found.get("connectors", []) if int(k["connector"]) >= 1)
    try:
        requests = charger_requests(args.action, found["ocpp"], connectors, connector=args.connector, hard=args.hard)
    except ValueError as exc:
        raise ClientError(f"{args.id}: {exc}", EXIT_USAGE) from None
    label = f"{args.id} (OCPP {found['ocpp'].removeprefix('ocpp')})"
    results, code = [], EXIT_OK
    for req in requests:
        result: dict[str, Any] = {"action": req.action, "request": req.payload}
        try:
            answer = client.call_charger(args.id, req.action, req.payload)
        except ClientError as exc:
            if exc.status is None or exc.exit_code in (EXIT_UNREACHABLE, EXIT_REFUSED):
                raise
            body = exc.body if isinstance(exc.body, dict) else {}
            results.append(result | {"ok": False, "error": {"http": exc.status, **body}})
            code = max(code, exc.exit_code)
            if not args.json:
                print(f"laadplein charger: {label}: {_failure(req, exc, body)}", file=sys.stderr)
            if exc.status in (404, 409):
                break  # the charger is gone or unknown: the next requests fare no better
            continue
        status, words = views.answer_text(answer)
        ok = status in OK_ANSWERS.get(req.action, ())
        results.append(result | {"ok": ok, "answer": answer})
        code = code if ok else max(code, EXIT_FAILED)
        if not args.json:
            print(f"{label}: {req.what} {words}")
    if args.json:
        _print_json({"charger": args.id, "ocpp": found["ocpp"], "ok": code == EXIT_OK, "results": results})
    return code
