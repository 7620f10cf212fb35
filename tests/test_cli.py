"""The operator's commands without a daemon: reading --since, the charger requests per OCPP version,
the parser, and the event listing's paging and following against a fake admin API."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from controller.cli import ops as cli_ops
from controller.cli.client import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ClientError,
)
from controller.cli.main import build_parser, main
from controller.cli.ops import Cursor, charger_requests, fetch
from controller.cli.views import When, answer_text, event_line, read_when
from drivers.contract.clock import parse_ts, wire_ts

AMS = "Europe/Amsterdam"
# a winter afternoon (UTC+1) and a summer one (UTC+2)
WINTER = datetime(2026, 11, 28, 13, 5, 9, tzinfo=UTC)
SUMMER = datetime(2026, 7, 1, 10, 0, 0, tzinfo=UTC)


# ---- --since -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        ("2026-11-28T12:00:00Z", WINTER, "2026-11-28T12:00:00.000Z"),
        ("2026-11-28T12:00:00.250z", WINTER, "2026-11-28T12:00:00.250Z"),
        ("2026-11-28T13:00:00+01:00", WINTER, "2026-11-28T12:00:00.000Z"),
        ("2026-07-01T09:30-04:00", SUMMER, "2026-07-01T13:30:00.000Z"),
        # local dates and times are the square's, with the offset of that day
        ("2026-11-28", WINTER, "2026-11-27T23:00:00.000Z"),
        ("2026-07-01", WINTER, "2026-06-30T22:00:00.000Z"),
        ("2026-11-28 13:05", WINTER, "2026-11-28T12:05:00.000Z"),
        ("2026-11-28T13:05:30", WINTER, "2026-11-28T12:05:30.000Z"),
        # a time of day is today, in the square's zone
        ("13:05", WINTER, "2026-11-28T12:05:00.000Z"),
        ("9:30", SUMMER, "2026-07-01T07:30:00.000Z"),
        ("00:10:05", WINTER, "2026-11-27T23:10:05.000Z"),
        # spans back from now
        ("10m", WINTER, "2026-11-28T12:55:09.000Z"),
        ("2h", WINTER, "2026-11-28T11:05:09.000Z"),
        ("3d", WINTER, "2026-11-25T13:05:09.000Z"),
        ("1h30m", WINTER, "2026-11-28T11:35:09.000Z"),
        ("45s", WINTER, "2026-11-28T13:04:24.000Z"),
        ("1w", WINTER, "2026-11-21T13:05:09.000Z"),
        (" 2h ", WINTER, "2026-11-28T11:05:09.000Z"),
    ],
)
def test_since_reads_every_documented_form(text, now, expected):
    assert wire_ts(read_when(text).utc(AMS, now)) == expected


def test_today_is_the_squares_today_not_utcs():
    # 23:30 UTC on 28 November is already 29 November in Amsterdam
    late = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
    assert wire_ts(read_when("00:15").utc(AMS, late)) == "2026-11-28T23:15:00.000Z"
    assert wire_ts(read_when("00:15").utc("UTC", late)) == "2026-11-28T00:15:00.000Z"


def test_the_same_local_text_in_another_zone_is_another_moment():
    when = read_when("2026-11-28 13:05")
    assert when == When(local=datetime(2026, 11, 28, 13, 5))
    assert when.utc("UTC", WINTER) - when.utc(AMS, WINTER) == timedelta(hours=1)
    assert read_when("13:05") == When(clock=time(13, 5))
    assert read_when("2h") == When(back_s=7200)


@pytest.mark.parametrize("text", ["", "yesterday", "10", "10x", "m10", "2h-", "25:00", "12:60", "2026-13-01", "13.05", "-2h", "2026-11-28T13:05Zulu"])
def test_bad_since_is_refused_with_examples(text):
    with pytest.raises(ValueError) as err:
        read_when(text)
    assert "2026-11-28T13:05:00Z" in str(err.value) and "10m" in str(err.value)


def test_bad_since_exits_2_before_any_request(capsys):
    code = main(["events", "--api", "http://127.0.0.1:9", "--since", "gisteren"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "gisteren" in err and "10m, 2h, 3d" in err


# ---- the parser --------------------------------------------------------------------------------


def test_charger_command_parses_options_anywhere():
    args = build_parser().parse_args(["charger", "CP01", "unlock", "--connector", "2", "--json"])
    assert (args.id, args.action, args.connector, args.hard, args.json) == ("CP01", "unlock", 2, False, True)
    args = build_parser().parse_args(["charger", "--now", "CP02", "reset"])
    assert args.hard is True
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["charger", "CP01", "explode"])
    assert exit_.value.code == EXIT_USAGE


def test_events_parses_follow_and_since():
    args = build_parser().parse_args(["events", "-f", "--since", "10m", "--config", "x.toml"])
    assert (args.follow, args.since, args.config) == (True, "10m", "x.toml")


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--config", "a.toml", "--api", "http://127.0.0.1:9"],  # both ways of finding the daemon
        ["bays", "--api", "127.0.0.1:8080"],  # not a URL
        ["status", "--config", "/nonexistent/laadplein.toml"],
        ["status", "--api", "http://127.0.0.1:9", "--token-file", "/nonexistent/token"],
    ],
)
def test_a_daemon_that_cannot_be_found_is_bad_usage(argv, capsys):
    assert main(argv) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"laadplein {argv[0]}: ")


# ---- charger requests --------------------------------------------------------------------------

V16, V201 = "ocpp1.6", "ocpp2.0.1"


@pytest.mark.parametrize(
    ("command", "ocpp", "connector", "hard", "expected"),
    [
        ("reset", V16, None, False, [("Reset", {"type": "Soft"})]),
        ("reset", V16, None, True, [("Reset", {"type": "Hard"})]),
        ("reset", V201, None, False, [("Reset", {"type": "OnIdle"})]),
        ("reset", V201, None, True, [("Reset", {"type": "Immediate"})]),
        ("unlock", V16, 2, False, [("UnlockConnector", {"connectorId": 2})]),
        ("unlock", V201, 2, False, [("UnlockConnector", {"evseId": 2, "connectorId": 1})]),
        ("trigger-status", V16, None, False, [("TriggerMessage", {"requestedMessage": "StatusNotification"})]),
        ("trigger-status", V16, 1, False, [("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1})]),
        ("trigger-status", V201, None, False, [
            ("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}}),
            ("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 2, "connectorId": 1}}),
        ]),
        ("trigger-status", V201, 2, False, [
            ("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 2, "connectorId": 1}}),
        ]),
    ],
)
def test_charger_requests_speak_the_chargers_version(command, ocpp, connector, hard, expected):
    requests = charger_requests(command, ocpp, [1, 2], connector=connector, hard=hard)
    assert [(r.action, r.payload) for r in requests] == expected
    assert all(r.what.startswith(r.action) for r in requests)


@pytest.mark.parametrize(
    ("command", "ocpp", "connector", "hard", "words"),
    [
        ("unlock", V16, None, False, "needs --connector"),
        ("unlock", V201, 3, False, "no EVSE 3 (this charger has 1-2)"),
        ("trigger-status", V16, 0, False, "no connector 0"),
        ("reset", V16, 1, False, "no --connector"),
        ("unlock", V16, 1, True, "reset only"),
        ("reset", "ocpp2.1", None, False, "unknown OCPP version"),
    ],
)
def test_charger_requests_refuse_what_makes_no_sense(command, ocpp, connector, hard, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        charger_requests(command, ocpp, [1, 2], connector=connector, hard=hard)


def test_answer_text_gives_the_status_and_the_chargers_reason():
    assert answer_text({"status": "Accepted"}) == ("Accepted", "Accepted")
    assert answer_text({"status": "Rejected", "statusInfo": {"reasonCode": "Busy", "additionalInfo": "tx"}}) == (
        "Rejected", "Rejected (Busy: tx)")
    assert answer_text({})[0] == ""


# ---- events: paging, following -----------------------------------------------------------------


def ev(n: int, at: datetime) -> dict:
    return {"id": n, "ts": wire_ts(at), "kind": "note", "bay": None, "charger": None, "message": f"event {n}", "data": None}


class FakeApi:
    """The event log behind GET /api/events (at or after `since`, oldest first, `limit` rows)."""

    base_url = "http://fake"
    timeout_s = 10.0

    def __init__(self, events: list[dict], script: list | None = None) -> None:
        self.events = events
        self.script = script or []  # per poll: None (answer), a ClientError to raise, or a callable to run first
        self.asked: list[str] = []

    def timezone(self) -> str:
        return AMS

    def get(self, path: str):
        self.asked.append(path)
        from urllib.parse import parse_qs, urlsplit

        q = parse_qs(urlsplit(path).query)
        limit = int(q.get("limit", ["500"])[0])
        if "after_id" in q:  # in the order written
            return [e for e in self.events if e["id"] > int(q["after_id"][0])][:limit]
        if "since" not in q:
            return self.events[-limit:]
        since = parse_ts(q["since"][0])
        return [e for e in self.events if parse_ts(e["ts"]) >= since][:limit]


def test_fetch_pages_through_more_than_a_page_without_repeats(monkeypatch):
    monkeypatch.setattr(cli_ops, "PAGE", 4)
    # ten events, three of them at one instant that straddles a page boundary
    stamps = [WINTER + timedelta(seconds=s) for s in (0, 1, 2, 3, 3, 3, 4, 5, 6, 7)]
    api = FakeApi([ev(i, t) for i, t in enumerate(stamps)])
    got = fetch(api, "/api/events", Cursor(lambda e: e["id"]), WINTER)
    assert [e["id"] for e in got] == list(range(10))
    assert len(api.asked) > 2


def test_cursor_drops_what_it_showed_and_late_writes_still_show():
    cursor = Cursor(lambda e: e["id"])
    assert [e["id"] for e in cursor.take([ev(1, WINTER), ev(2, WINTER + timedelta(seconds=1))])] == [1, 2]
    # the next poll looks back: the same rows again, plus one written late with an older time
    again = [ev(1, WINTER), ev(3, WINTER + timedelta(milliseconds=500)), ev(2, WINTER + timedelta(seconds=1))]
    assert [e["id"] for e in cursor.take(again)] == [3]
    assert cursor.window_start() == WINTER + timedelta(seconds=1) - cli_ops.FOLLOW_OVERLAP
    # what falls out of the window is forgotten, so the memory stays small
    cursor.take([ev(9, WINTER + timedelta(hours=1))])
    assert set(cursor.shown) == {9}


def follow_args(*extra: str):
    return build_parser().parse_args(["events", "--follow", "--api", "http://fake", *extra])


def run_follow(monkeypatch, api: FakeApi, polls: list, *extra: str) -> int:
    """Run `events --follow` against `api`; each sleep runs the next step of `polls`, then Ctrl-C."""
    steps = iter(polls)

    def sleep(_s: float) -> None:
        step = next(steps, None)
        if step is None:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr(cli_ops, "sleep", sleep)
    monkeypatch.setattr(cli_ops, "open_client", lambda args: api)
    return cli_ops.cmd_events(follow_args(*extra))


def test_follow_prints_new_events_once_survives_a_restart_and_ends_on_ctrl_c(monkeypatch, capsys):
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    api = FakeApi([ev(i, t0 + timedelta(seconds=i)) for i in range(1, 13)])
    real_get = api.get
    down = {"on": False}

    def get(path):
        if down["on"]:
            raise ClientError("daemon not reachable at http://fake (refused)", EXIT_UNREACHABLE)
        return real_get(path)

    api.get = get
    late = datetime.now(UTC)

    def add(n, at):
        return lambda: api.events.append(ev(n, at))

    polls = [
        lambda: None,
        add(13, late),
        lambda: down.update(on=True),
        lambda: None,
        lambda: None,
        lambda: (down.update(on=False), api.events.append(ev(14, late + timedelta(seconds=1)))),
        lambda: None,
    ]
    code = run_follow(monkeypatch, api, polls, "--json")
    assert code == 0
    out, err = capsys.readouterr()
    import json

    ids = [json.loads(line)["id"] for line in out.splitlines()]
    assert ids == list(range(3, 15))  # the last ten, then each new one once
    assert err.count("daemon not reachable, retrying") == 1
    assert "reachable again" in err


def test_follow_ends_on_a_refused_token(monkeypatch, capsys):
    api = FakeApi([ev(1, WINTER)])

    def refuse():
        def get(path):
            raise ClientError("the daemon refused the token (missing or wrong bearer token)", EXIT_REFUSED)

        api.get = get

    assert run_follow(monkeypatch, api, [refuse]) == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert "refused the token" in err
    # the plain output names the zone once and shows times in it
    assert out.count(AMS) == 1 and event_line(ev(1, WINTER), AMS) in out
    assert "14:05:09" in out  # 13:05:09 UTC in Amsterdam in November


def test_follow_shows_an_alarm_written_late_with_the_time_it_began():
    # an alarm's event is dated when the charger went away, 30 s before it is written
    api = FakeApi([ev(0, WINTER), ev(1, WINTER + timedelta(seconds=31))])
    cursor = Cursor(lambda e: (e["id"], e["ts"]))
    assert [e["id"] for e in cursor.take(api.get("/api/events?limit=10"))] == [0, 1]
    api.events.append(ev(2, WINTER + timedelta(seconds=1)))  # written now, dated back
    assert [e["id"] for e in cli_ops._written_after(api, cursor)] == [2]
    assert cli_ops._written_after(api, cursor) == []  # and only once


def test_the_hour_the_clocks_go_back_says_which_one():
    from controller.cli.views import local_time

    assert local_time("2026-10-25T00:30:00Z", AMS) == "2026-10-25 02:30:00 CEST"
    assert local_time("2026-10-25T01:30:00Z", AMS) == "2026-10-25 02:30:00 CET"
    assert local_time("2026-11-28T13:00:00Z", AMS) == "2026-11-28 14:00:00"  # an ordinary hour needs no zone
