"""`laadplein check FILE`: validate a config and show a one-screen summary, or list every issue."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from config.loader import (
    ConfigError,
    ConfigIssue,
    config_warnings,
    key_line,
    load_config,
)
from config.schema import SquareConfig

__all__ = ["check_main", "summary_rows"]

EXIT_OK = 0
EXIT_BAD_CONFIG = 2
PROGRESS_AFTER_S = 0.3  # a check done sooner shows no status line: it would only flicker


class CheckProgress:
    """A status line on `console` (stderr on a terminal) while a slow check runs; gone when it ends.

    It appears only once the check has taken `after_s`, so a quick check prints exactly what it
    printed before. Without a console it shows nothing.
    """

    def __init__(self, console: Console | None, *, after_s: float = PROGRESS_AFTER_S) -> None:
        self._status = Status("", console=console) if console is not None else None
        self._after_s = after_s
        self._lock = threading.Lock()  # the timer's thread shows the line, the checking thread ends it
        self._timer: threading.Timer | None = None
        self._shown = self._ended = False

    def __enter__(self) -> CheckProgress:
        if self._status is not None:
            # The check itself keeps the main thread busy (parsing, validating, loading certificates).
            self._timer = threading.Timer(self._after_s, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._ended = True
            if self._shown and self._status is not None:
                self._status.stop()

    @property
    def shown(self) -> bool:
        """Whether the status line has appeared (the check took longer than `after_s`)."""
        return self._shown

    def step(self, text: str) -> None:
        """What the check does now."""
        if self._status is not None:
            self._status.update(escape(text))

    def _show(self) -> None:
        with self._lock:
            if not self._ended and self._status is not None:
                self._status.start()
                self._shown = True


def _terminal_stderr() -> Console | None:
    """A console on stderr when stderr is a terminal: progress never goes into a pipe or a log."""
    return Console(stderr=True) if sys.stderr.isatty() else None


def check_main(path: str, *, progress_console: Console | None = None) -> int:
    """Check the config at `path`: 0 with a summary when valid, 2 with one `FILE:LINE: key.path: message` per issue.

    A valid config's warnings (`FILE:LINE: warning: key.path: message`: what it leaves open on the network)
    follow the summary, apart from it; they do not change the exit status.

    A check that takes more than `PROGRESS_AFTER_S` shows what it is doing on `progress_console`
    (default: stderr, when it is a terminal).
    """
    with CheckProgress(progress_console or _terminal_stderr()) as progress:
        progress.step(f"reading and validating {path}")
        try:
            square = load_config(path)
        except ConfigError as exc:
            square, issues = None, exc.issues
        else:
            if square.ocpp.tls_cert_file is not None:
                progress.step(f"checking the TLS certificate {square.ocpp.tls_cert_file} "
                              f"and key {square.ocpp.tls_key_file}"
                              + (f" and the ECDSA pair {square.ocpp.tls_ecdsa_cert_file}"
                                 if square.ocpp.tls_ecdsa_cert_file is not None else ""))
            tls_issue = _tls_issue(path, square)
            issues = [] if tls_issue is None else [tls_issue]
            issues += _mqtt_file_issues(path, square)
    if square is None or issues:
        # Plain print: rich would wrap long lines and read "[grid]" in messages as markup.
        for issue in issues:
            print(issue)
        return EXIT_BAD_CONFIG
    console = Console(highlight=False, soft_wrap=False)
    table = Table(title=f"{escape(path)}: valid", show_header=False, title_justify="left", expand=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for what, value in summary_rows(square):
        table.add_row(escape(what), escape(value))
    console.print(table)
    warnings = config_warnings(path, square)
    if warnings:
        print(f"\n{len(warnings)} warning(s): the config is valid, and leaves this open:")
        for warning in warnings:
            print(warning)
    return EXIT_OK


def _tls_issue(path: str, square: SquareConfig) -> ConfigIssue | None:
    """The daemon would not start with these TLS files (missing, unreadable, not a certificate or key, no match)."""
    ocpp = square.ocpp
    if ocpp.tls_cert_file is None or ocpp.tls_key_file is None:
        return None
    # Imported here: only a config with TLS needs the OCPP driver loaded to check it.
    from drivers.ocpp.tls import TlsFileError, tls_server_context

    try:
        tls_server_context(ocpp.tls_cert_file, ocpp.tls_key_file, ocpp.tls_ecdsa_cert_file, ocpp.tls_ecdsa_key_file)
    except TlsFileError as exc:
        try:
            line = key_line(Path(path).read_text(encoding="utf-8"), exc.key)
        except (OSError, UnicodeDecodeError):
            line = 0
        return ConfigIssue(path, line, exc.key, exc.message)
    return None


def _mqtt_file_issues(path: str, square: SquareConfig) -> list[ConfigIssue]:
    """The daemon would not start with these `[mqtt]` files (password file, CA, client certificate)."""
    mqtt = square.mqtt
    if mqtt.password_file is None and mqtt.ca_file is None:
        return []
    from drivers.mqtt.credentials import MqttFileError, read_password, tls_client_context  # noqa: I001

    problems: list[MqttFileError] = []
    try:
        if mqtt.password_file is not None:
            read_password(mqtt.password_file)
    except MqttFileError as exc:
        problems.append(exc)
    try:
        if mqtt.ca_file is not None:
            tls_client_context(mqtt.ca_file, mqtt.cert_file, mqtt.key_file)
    except MqttFileError as exc:
        problems.append(exc)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    return [ConfigIssue(path, key_line(text, p.key) if text is not None else 0, p.key, p.message) for p in problems]


def summary_rows(square: SquareConfig) -> list[tuple[str, str]]:
    """The summary as (label, text) rows, so other front ends can show the same thing."""
    grid = square.grid
    grid_kw = grid.phases * grid.voltage_v * grid.limit_a / 1000
    grid_text = f"{grid.phases} x {_num(grid.limit_a)} A at {_num(grid.voltage_v)} V = {grid_kw:.1f} kW"
    if grid.base_load_a:
        grid_text += f" (base load {_num(grid.base_load_a)} A)"
    connectors = sum(charger.connectors for charger in square.chargers)
    sensors = sum(1 for bay in square.bays if bay.sensor)
    battery = square.battery
    if battery is None:
        battery_text = "none"
    else:
        battery_text = (
            f"{battery.driver} at {battery.host}:{battery.port} unit {battery.unit_id}, "
            f"{_num(battery.capacity_kwh)} kWh, charge {_num(battery.max_charge_w / 1000)} kW, "
            f"discharge {_num(battery.max_discharge_w / 1000)} kW, "
            f"SoC {_num(battery.soc_min_pct)}-{_num(battery.soc_max_pct)} %, reverts after {battery.revert_timeout_s} s"
        )
        if battery.driver == "simulated":
            battery_text = battery_text.replace(f"at {battery.host}:{battery.port} unit {battery.unit_id}", "in process")
        for w in battery.reserve:
            battery_text += f"; keeps {_num(w.soc_pct)} % {w.start}-{w.end}"
    meter = square.grid_meter
    if meter is None:
        meter_text = "none (load estimated from the chargers and the battery)"
    elif meter.serial_port is not None:
        meter_text = f"{meter.driver} on {meter.serial_port} (DSMR {meter.dsmr_version})"
    else:
        meter_text = f"{meter.driver} at {meter.host}:{meter.tcp_port}" + (f" unit {meter.unit_id}" if meter.driver == "sdm630" else "")
    ocpp = square.ocpp
    with_password = sum(1 for charger in square.chargers if charger.password)
    scheme, profile = ("wss", 2) if ocpp.tls_cert_file is not None else ("ws", 1)
    mqtt = square.mqtt
    api = square.api
    signage = square.signage
    control = square.control
    return [
        ("site", f"{square.site.id}" + (f" ({square.site.name})" if square.site.name else "")),
        ("timezone", square.site.timezone),
        ("grid", grid_text),
        ("chargers", f"{len(square.chargers)} with {connectors} connectors"),
        ("bays", f"{len(square.bays)}, {sensors} with a sensor"),
        ("battery", battery_text),
        ("grid meter", meter_text),
        ("ocpp", f"{scheme}://{ocpp.host}:{ocpp.port}{ocpp.path}/<charger id>"
                 + (f" (certificate {ocpp.tls_cert_file})" if scheme == "wss" else "")),
        ("ocpp auth", f"{ocpp.auth}, {with_password} charger(s) with a password"
                      + (f" (security profile {profile})" if with_password else "")),
        ("mqtt", f"{mqtt.host}:{mqtt.port}" + (", TLS" if mqtt.ca_file is not None else ", no TLS")
                 + (f", as {mqtt.username}" if mqtt.username else ", anonymous") + f", topics under {square.topic_root}/"),
        ("api", f"{'https' if api.cert_file else 'http'}://{api.host}:{api.port}, token in {square.api_token_file}"
                + (", risky charger calls allowed" if api.allow_risky_calls else "")),
        ("storage", f"{square.storage.path} (sessions kept {square.storage.retention_days} days)"),
        ("control", f"every {_num(control.period_s)} s, min {_num(control.min_current_a)} A, lease {control.lease_s} s, "
                    f"turns of {control.turn_s} s, chargers react in {_num(control.reaction_s)} s"),
        (
            "signage",
            f"{signage.min_free_ev_bays} free EV bay(s), grace {signage.grace_s} s, "
            f"dwell {signage.min_dwell_s} s, language {signage.language}",
        ),
    ]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m controller.cli.check FILE", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    sys.exit(check_main(sys.argv[1]))
