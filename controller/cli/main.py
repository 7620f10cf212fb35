"""The `laadplein` command: its parser, and the daemon, config check, console, demo and simulator.

The operator's commands that ask a running daemon live in `controller.cli.ops`. Exit codes
(interfaces.md §1): 0 done, 2 bad usage or config, 3 daemon not reachable, 4 refused (token).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.cli.client import DEFAULT_CONFIG, config_path
from controller.cli.ops import (
    add_client_options,
    client_or_exit,
    cmd_bays,
    cmd_charger,
    cmd_events,
    cmd_override,
    cmd_sessions,
    cmd_status,
)
from controller.cli.views import WHEN_EXAMPLES

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130


def _config_path(args: argparse.Namespace) -> Path:
    return config_path(getattr(args, "config", None))


def _load(path: Path):
    """The config, or None after printing every error in the FILE:LINE: key: message form."""
    from config.loader import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from controller.daemon import main_run

    cfg = _load(_config_path(args))
    if cfg is None:
        return EXIT_USAGE
    if args.storage:
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"path": Path(args.storage).resolve()})})
    return main_run(cfg)


def cmd_check(args: argparse.Namespace) -> int:
    from controller.cli.check import check_main

    return check_main(args.file)


def cmd_console(args: argparse.Namespace) -> int:
    import asyncio

    from controller.cli.console import run_console

    if not 0.1 <= args.refresh_s <= 60:
        print("laadplein console: --refresh-s must be 0.1-60 seconds", file=sys.stderr)
        return EXIT_USAGE
    client = client_or_exit(args)
    client.timeout_s = min(client.timeout_s, 3.0)  # a hung daemon must not freeze the screen for long
    try:
        return asyncio.run(run_console(client, refresh_s=args.refresh_s))
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from controller.cli.demo import run_demo

    if args.duration is not None and not 5 <= args.duration <= 86400:
        print("laadplein demo: --duration must be 5-86400 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(
            run_demo(headless=args.headless, duration_s=args.duration, seed=args.seed,
                     config=Path(args.config) if args.config else None)
        )
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from drivers.sim.square import serve

    cfg = _load(_config_path(args))
    if cfg is None:
        return EXIT_USAGE
    if not 0.1 <= args.speed <= 1000:
        print("laadplein sim: --speed must be 0.1-1000", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("ocpp").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(cfg, seed=args.seed, speed=args.speed, control_port=args.control_port, ocpp=args.ocpp))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="laadplein", description="Controller for a public EV charging square.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--config", help=f"config file (default $LAADPLEIN_CONFIG, then {DEFAULT_CONFIG})")
    p.add_argument("--storage", help="database file, overriding storage.path (e.g. for a try-out without root)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="the square at a glance")
    add_client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("bays", help="every bay's light, reason, occupancy, connector and override")
    add_client_options(p)
    p.set_defaults(func=cmd_bays)

    since_help = f"only since WHEN: {WHEN_EXAMPLES}; local times are the square's"
    p = sub.add_parser("events", help="the event log")
    add_client_options(p)
    p.add_argument("--since", metavar="WHEN", help=since_help)
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events as they come (with --json: one JSON object a line); Ctrl-C ends")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("sessions", help="charging sessions")
    add_client_options(p)
    p.add_argument("--since", metavar="WHEN", help=f"only sessions started since WHEN: {WHEN_EXAMPLES}")
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("override", help="hold a bay's light, or end the hold")
    add_client_options(p)
    p.add_argument("bay")
    p.add_argument("color", nargs="?", help="blue, green or off")
    p.add_argument("--minutes", type=float, help="how long the hold lasts")
    p.add_argument("--why", help="the reason, for the log")
    p.add_argument("--who", help="who sets it (default: $USER)")
    p.add_argument("--clear", action="store_true", help="end the override now")
    p.set_defaults(func=cmd_override)

    p = sub.add_parser("charger", help="reset a charger, unlock a connector, or ask for its statuses",
                       description="Sends the OCPP request in the charger's own version (1.6 or 2.0.1).")
    add_client_options(p)
    p.add_argument("id", help="the charger's id, e.g. CP01")
    p.add_argument("action", choices=("reset", "unlock", "trigger-status"))
    p.add_argument("--hard", "--now", dest="hard", action="store_true",
                   help="reset at once (1.6 Hard, 2.0.1 Immediate) instead of soft / when idle")
    p.add_argument("--connector", type=int, metavar="N",
                   help="the connector (for an OCPP 2.0.1 charger: the EVSE); needed by unlock")
    p.set_defaults(func=cmd_charger)

    from controller.cli import broker as cli_broker
    from controller.cli import lights as cli_lights

    cli_lights.add_parser(sub)
    cli_broker.add_parser(sub)

    p = sub.add_parser("console", help="live console of a running daemon (q quits, ? shows help)")
    p.add_argument("--config", help="the square's config file (reads [api] and its token file)")
    p.add_argument("--api", help="the admin API's URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--token-file", help="file holding the admin API token (with --api)")
    p.add_argument("--refresh-s", type=float, default=1.0, help="seconds between polls of the daemon (default 1)")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("demo", help="a whole simulated square on this machine, with the live console")
    p.add_argument("--headless", action="store_true", help="no console: run, then print a summary")
    p.add_argument("--duration", type=float, help="seconds to run with --headless (default 60)")
    p.add_argument("--seed", type=int, default=1, help="the afternoon's random seed (default 1)")
    p.add_argument("--config", help="another square than the Hoofddorp example")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="only the simulated devices of a square, for a daemon or a test rig")
    p.add_argument("--config", help=f"config file (default $LAADPLEIN_CONFIG, then {DEFAULT_CONFIG})")
    p.add_argument("--seed", type=int, default=1, help="random seed of the day's arrivals (default 1)")
    p.add_argument("--speed", type=float, default=1.0, help="time compression: 60 plays an hour per minute")
    p.add_argument("--control-port", type=int, default=8090, help="port of the fault-injection interface (default 8090)")
    p.add_argument("--ocpp", choices=("1.6", "2.0.1", "mixed"), default="mixed",
                   help="the OCPP version the simulated chargers speak (default mixed: every second one 2.0.1)")
    p.set_defaults(func=cmd_sim)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        import signal

        # `laadplein status --json | head` should end quietly, not with a traceback.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

