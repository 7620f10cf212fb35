"""The attack bench's square: config (valid on older and newer gateways alike), the daemon, the chargers,
the grid meter and what the rig knows to be true (real currents, limits held), for the attacks to judge by.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.attack_report import Row
from drivers.sim.charger16 import SimCharger
from drivers.sim.charger_math import plain_draw
from tests.integration.harness import REPO, Daemon

GRID_A = 80.0  # the fuse, per phase
OTHER_A = 30.0  # what the rest of the site draws, per phase, as the grid meter sees it
PASSWORD = "attack-bench-pw-0123456789"  # long enough for any password rule
ROOT = "lp/testplein"
CONTROL = "period_s = 0.25\nreaction_s = 1\nlease_s = 60\nmeter_interval_s = 1\n"
# Chargers with a password (CP01 is the hostile one, with its own good password), and CP04 without.
PROTECTED = ("CP01", "CP02", "CP03")
OPEN = "CP04"


def bays_of(charger: str) -> tuple[str, str]:
    n = int(charger[2:])
    return f"B{2 * n - 1:02d}", f"B{2 * n:02d}"


def square_toml(
    *,
    ocpp_port: int,
    api_port: int,
    mqtt_port: int,
    meter_port: int | None,
    ocpp_host: str = "0.0.0.0",
    token_file: str | None = "api-token",
    open_charger: bool = True,
    password: str = PASSWORD,
    ocpp_extra: str = "",
    api_extra: str = "",
    mqtt_extra: str = "",
) -> str:
    """The bench's square: 4 two-connector chargers, a sensor on every bay, the grid meter, reserve of 1."""
    lines = [
        '[site]\nid = "testplein"\nname = "Attack bench square"\ntimezone = "Europe/Amsterdam"\n',
        f"[grid]\nphases = 3\nlimit_a = {GRID_A:g}\n",
        (
            f'[ocpp]\nhost = "{ocpp_host}"\nport = {ocpp_port}\npath = "/ocpp"\nheartbeat_interval_s = 60\n'
            f"call_timeout_s = 5\nlogin_lockout_s = 5\n{ocpp_extra}"
        ),
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "lp"\n{mqtt_extra}',
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n'
        + (f'token_file = "{token_file}"\n' if token_file else "")
        + api_extra,
        '[storage]\npath = "state/laadplein.db"\n',
        "[control]\n" + CONTROL,
        "[signage]\nmin_free_ev_bays = 1\ngrace_s = 3\nmin_dwell_s = 0\nstartup_wait_s = 5\noffline_after_s = 2\n",
    ]
    if meter_port is not None:
        lines.append(
            f'[grid_meter]\ndriver = "sdm630"\nhost = "127.0.0.1"\nport = {meter_port}\npoll_s = 0.25\ntimeout_s = 0.5\nmargin_a = 2\n'
        )
    chargers = [*PROTECTED, OPEN] if open_charger else list(PROTECTED)
    for cid in chargers:
        pw = "" if cid == OPEN else f'password = "{password}"\n'
        lines.append(
            f'[[chargers]]\nid = "{cid}"\nmax_current_a = 32\nphases = 3\nconnectors = 2\n{pw}'
        )
    for cid in chargers:
        for n, bay in enumerate(bays_of(cid), start=1):
            lines.append(
                f'[[bays]]\nid = "{bay}"\ncharger = "{cid}"\nconnector = {n}\nsensor = true\n'
            )
    return "\n".join(lines)


def check(path: Path) -> tuple[int, str]:
    """`laadplein check FILE`: its exit code and everything it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli", "check", str(path)],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


class BenchDaemon(Daemon):
    """The harness's daemon, whose API calls carry the token from the file the daemon made, once it exists
    (also the health checks while it starts, for a gateway that wants the token there too)."""

    def api(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
    ):
        if self.token is None and (self.folder / "api-token").exists():
            self.token = (self.folder / "api-token").read_text().strip() or None
        return super().api(method, path, body, token=token, timeout_s=timeout_s)


@dataclass
class Started:
    """The running daemon and what it took to start it (fallbacks for an older gateway)."""

    daemon: BenchDaemon
    token: str | None
    open_charger: bool
    notes: list[str] = field(default_factory=list)


def start_square(
    folder: Path,
    ports: dict[str, int],
    make_text: Callable[..., str],
    *,
    refusable: str | None = None,
) -> Started:
    """Start the daemon of `make_text(**options)` with a token file; fall back where an older gateway refuses.

    `refusable` names a charger the config may be refused for (a passwordless one on 0.0.0.0): then it is
    left out (`open_charger=False`) and the refusal noted.
    """
    notes: list[str] = []
    options: dict[str, Any] = {}
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / "probe.toml"
    probe.write_text(make_text(**options))
    rc, out = check(probe)
    if rc != 0 and refusable is not None and refusable in out:
        notes.append(
            f"`laadplein check` refuses the passwordless {refusable} on 0.0.0.0: {out.strip().splitlines()[-1][:160]}"
        )
        options["open_charger"] = False
    elif rc != 0:
        notes.append(f"`laadplein check` exit {rc}: {out.strip()[-300:]}")
    for _ in range(3):
        daemon = BenchDaemon(
            folder, make_text(**options), api_port=ports["api"], ocpp_port=ports["ocpp"]
        )
        try:
            daemon.start(timeout_s=30)
            break
        except RuntimeError as exc:
            why = str(exc)
            if "token_file" in why and options.get("token_file", "") is not None:
                # An older gateway wants the token file to exist and has no token by default: run it so.
                notes.append(
                    "the daemon does not make a missing api.token_file: run without one (its default, no token)"
                )
                options["token_file"] = None
            elif (
                refusable is not None
                and refusable in why
                and options.get("open_charger", True)
            ):
                notes.append(
                    f"the daemon refuses to start with the passwordless {refusable} on 0.0.0.0"
                )
                options["open_charger"] = False
            else:
                raise
    else:
        raise RuntimeError(f"the daemon would not start: {notes}")
    token_path = folder / "api-token"
    token = token_path.read_text().strip() if token_path.exists() else None
    daemon.token = token
    return Started(daemon, token, options.get("open_charger", True), notes)


class AttackCharger(SimCharger):
    """A simulated charger whose meter can be told to lie about its currents (A per phase, per connector)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fake_a: dict[int, float] = {}

    def _reading(self, connector: int) -> tuple[float, tuple[float, ...]]:
        power_w, currents = super()._reading(connector)
        if connector in self.fake_a:
            return power_w, (self.fake_a[connector],) * self.phases
        return power_w, currents


def real_draw_a(sim: SimCharger, connector: int) -> float:
    """What the car on a connector really draws (A per phase), whatever its meter reports."""
    if connector not in sim.transactions:
        return 0.0
    car_max_a, car_phases = sim._cars.get(connector, (0.0, sim.phases))
    return max(
        plain_draw(sim.applied_a(connector), car_max_a, car_phases, sim.phases)[1],
        default=0.0,
    )


def held_a(sim: SimCharger, connector: int) -> float:
    """The limit the charger holds in force on a connector with a session (A per phase; 0 without one)."""
    if connector not in sim.transactions:
        return 0.0
    now = datetime.now(UTC)
    return sim.profiles.limit_a(
        connector,
        now,
        sim.transactions.get(connector),
        sim._tx_start.get(connector),
        sim.max_current_a,
        sim.phases,
    )


def site_draw(
    sims: Callable[[], dict[str, SimCharger]],
) -> Callable[[], tuple[float, float, float]]:
    """The grid meter's reading: the rest of the site plus what the cars really draw."""

    def draw() -> tuple[float, float, float]:
        cars = sum(
            real_draw_a(s, c)
            for s in sims().values()
            for c in range(1, s.connectors + 1)
        )
        return (OTHER_A + cars,) * 3

    return draw


def planned_grid_a(sims: dict[str, SimCharger]) -> float:
    """The most the site may draw per phase now: the rest of the site plus every limit the chargers hold."""
    return OTHER_A + sum(
        held_a(s, c) for s in sims.values() for c in range(1, s.connectors + 1)
    )


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777) if path.exists() else "missing"


async def guarded(
    rows: list[Row],
    finding: str,
    kind: str,
    work: Awaitable[Any],
    limit_s: float = 60.0,
) -> None:
    """Run one attack; its rows go to `rows`. One that breaks or hangs past `limit_s` is a SKIP row saying how.

    The wait does not depend on the attack's own clean-up: a client library stuck in its exit must not
    hold the bench up.
    """
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    if not done:
        task.cancel()
        rows.append(
            Row(finding, kind, 0, None, 0, f"did not finish within {limit_s:g} s")
        )
        return
    try:
        got = task.result()
    except Exception as exc:  # noqa: BLE001 - one broken attack must not end the bench
        rows.append(
            Row(
                finding,
                kind,
                0,
                None,
                0,
                f"could not run: {type(exc).__name__}: {str(exc)[:200]}",
            )
        )
        traceback.print_exc()
        return
    rows.extend(got if isinstance(got, list) else [got])
