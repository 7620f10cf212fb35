"""`laadplein lights-test`: have the daemon walk the bay lights through blue, green, off and back, show
its progress, then say per fixture which steps it acked (exit 0 all passed, 1 one or more failed)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import threading

from controller.cli.ops import add_client_options, client_or_exit
from controller.shell.lights_test import DEFAULT_HOLD_S, MAX_HOLD_S, STEPS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_ACK_TIMEOUT_S = 60.0  # the config's upper bound of signage.ack_timeout_s, when the config is not at hand
POLL_S = 0.3
MARGIN_S = 15.0  # on top of the longest the daemon may take: the cycle, the HTTP round trip, a busy gateway


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `lights-test` with the common client options of the operator's commands."""
    p = sub.add_parser("lights-test", help="walk every bay light through blue, green, off and back, checking the acks")
    add_client_options(p)
    p.add_argument("--bay", action="append", metavar="BAY", help="only this bay (repeat for more; default every bay)")
    p.add_argument("--hold-s", type=float,
                   help=f"seconds each colour stays on at least, to watch the square (default {DEFAULT_HOLD_S:g}, "
                        f"at most {MAX_HOLD_S:g})")
    p.set_defaults(func=cmd_lights_test)


def cmd_lights_test(args: argparse.Namespace) -> int:
    from controller.cli.client import ClientError

    if args.hold_s is not None and not 0 <= args.hold_s <= MAX_HOLD_S:
        print(f"laadplein lights-test: --hold-s must be 0-{MAX_HOLD_S:g} seconds", file=sys.stderr)
        return EXIT_USAGE
    client = client_or_exit(args)
    body: dict = {"who": os.environ.get("USER", "")}
    if args.bay:
        body["bays"] = args.bay
    if args.hold_s is not None:
        body["hold_s"] = args.hold_s
    hold_s = DEFAULT_HOLD_S if args.hold_s is None else args.hold_s
    wait_s = len(STEPS) * (_ack_timeout_s(args) + hold_s) + MARGIN_S
    try:
        answer = run_test(client, body, wait_s, show_progress=not args.json)
        if args.json:
            print(json.dumps(answer, indent=2))
        else:
            print_result(answer, client.timezone())
    except ClientError as exc:
        progress = exc.body.get("progress") if isinstance(exc.body, dict) else None
        if exc.status == 409 and isinstance(progress, dict) and progress.get("started"):
            from controller.cli.views import local_time

            tz = client.timezone()
            print(f"laadplein lights-test: a lights test is already running (started "
                  f"{local_time(progress['started'], tz)} {tz}); try again when it is done", file=sys.stderr)
        else:
            print(f"laadplein lights-test: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nstopped waiting: the daemon finishes the test and puts every light back "
              "(GET /api/lights/test shows the result)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if answer.get("ok") else EXIT_FAILED


def _ack_timeout_s(args: argparse.Namespace) -> float:
    """The square's ack timeout (s) from its config, or the largest a config may set when only --api is given."""
    if args.api:
        return MAX_ACK_TIMEOUT_S
    from config.loader import ConfigError, load_config
    from controller.cli.client import config_path

    try:
        return float(load_config(config_path(args.config)).signage.ack_timeout_s)
    except (ConfigError, OSError):
        return MAX_ACK_TIMEOUT_S


def run_test(client, body: dict, wait_s: float, *, show_progress: bool) -> dict:
    """POST the test (from a thread, under `wait_s`) while polling its progress; the daemon's answer."""
    poster = copy.copy(client)
    poster.timeout_s = wait_s
    outcome: dict = {}

    def post() -> None:
        from controller.cli.client import ClientError

        try:
            outcome["answer"] = poster.request("POST", "/api/lights/test", body)
        except ClientError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=post, name="lights-test-post", daemon=True)
    thread.start()
    if show_progress:
        poller = copy.copy(client)
        poller.timeout_s = min(client.timeout_s, 3.0)
        _show_progress(poller, thread)
    thread.join(wait_s + 5)  # the request's own timeout ends it before this
    if "error" in outcome:
        raise outcome["error"]
    if "answer" not in outcome:
        from controller.cli.client import EXIT_UNREACHABLE, ClientError

        raise ClientError(f"no answer to the lights test within {wait_s:g} s", EXIT_UNREACHABLE)
    return outcome["answer"]


def _show_progress(poller, thread: threading.Thread) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from controller.cli.client import ClientError

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting the lights test", total=None)
        while thread.is_alive():
            try:
                progress = poller.get("/api/lights/test")
            except ClientError:
                progress = None  # not started yet (404), or a slow answer: the POST says what went wrong
            # Until the daemon takes the POST, GET still shows the previous test's result.
            if isinstance(progress, dict) and progress.get("running"):
                bar.update(task, total=max(progress["total"], 1), completed=progress["done"],
                           description=describe_progress(progress))
            thread.join(POLL_S)


def describe_progress(progress: dict) -> str:
    """One line for the progress bar: "step 2/4: green, 10/12 acked" (and how many failed)."""
    text = f"step {progress['step']}/{progress['steps']}: {progress['step_name']}, {progress['acked']}/{progress['bays']} acked"
    return text + (f", {progress['failed']} failed" if progress.get("failed") else "")


WIDE = 110  # columns from which the problem fits in the table; narrower, it follows it line by line


def _cell(step: dict) -> str:
    color = f"{step['color']}: " if step["step"] == "back" and step.get("color") else ""
    if step["ok"]:
        return f"{color}[green]ok[/] {step['ack_s']:.2f} s"
    return f"{color}[bold red]FAILED[/]"


def result_table(answer: dict, *, with_problem: bool = True):
    """The per-fixture table: every step ok (with its ack time) or FAILED, in words as well as colours."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Lights test")
    table.add_column("bay", no_wrap=True)
    for step in STEPS:
        table.add_column(step, no_wrap=True)
    table.add_column("result", no_wrap=True)
    if with_problem:
        table.add_column("problem", overflow="fold")
    for f in answer["fixtures"]:
        cells = {s["step"]: _cell(s) for s in f["steps"]}
        result = {"PASSED": "[bold green]PASSED[/]", "FAILED": "[bold red]FAILED[/]"}.get(_verdict(f), _verdict(f))
        row = [escape(f["bay"]), *(cells.get(step, "-") for step in STEPS), result]
        table.add_row(*row, *([escape(f.get("problem") or "")] if with_problem else []))
    return table


def _verdict(fixture: dict) -> str:
    if fixture["ok"]:
        return "PASSED"
    return "FAILED" if fixture["steps"] else "NOT TESTED"


def summary(answer: dict) -> str:
    """The last line: all passed, or how many failed and which."""
    fixtures = answer["fixtures"]
    failed = [f["bay"] for f in fixtures if not f["ok"]]
    if answer.get("ok"):
        return f"all {len(fixtures)} fixture(s) passed"
    if not failed:
        return f"lights test FAILED: {answer.get('problem') or 'see above'}"
    return f"{len(failed)} of {len(fixtures)} fixture(s) FAILED: {', '.join(failed)}"


def print_result(answer: dict, tz: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    from controller.cli.views import local_time

    console = Console()
    console.print(f"lights test started {local_time(answer['started'], tz)} ({tz}), took {answer['took_s']:g} s",
                  highlight=False)
    if answer.get("problem"):
        console.print(f"[bold red]PROBLEM[/]: {answer['problem']}", highlight=False)
    wide = console.width >= WIDE
    console.print(result_table(answer, with_problem=wide))
    if not wide:
        for f in answer["fixtures"]:
            if f.get("problem"):
                console.print(f"{escape(f['bay'])} [bold red]{_verdict(f)}[/]: {escape(f['problem'])}", highlight=False)
    console.print(("[bold green]" if answer.get("ok") else "[bold red]") + summary(answer) + "[/]", highlight=False)
