"""The attack bench: a square on loopback (the real daemon, mosquitto, simulated chargers, a grid meter),
attacked as a hostile charger, a hostile device on the broker and a hostile web page or local user would.

It prints, per kind of attack, how many it ran and what the square did, with a PASS/FAIL against each
target and four totals that must stay 0: sessions of others touched, grid current above the fuse
(the rest of the site plus every limit the chargers hold, against the fuse), lights trapped (a bay
with a parked car that does not charge turned blue) and API calls accepted without a valid token.
It exits 0 either way: it reports, the tests judge. About two minutes, all on 127.0.0.1.

The broker takes anonymous clients, as one without the ACL of the install docs would: the MQTT rows
show what the gateway itself notices. Where the gateway makes no token file, the API is attacked as
it runs by default. The handshake flood runs with the daemon limited to 256 open files (prlimit).

    python3 -m bench.attack [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.integration.mosquitto as mosquitto_rig
from bench import (
    attack_doors,
    attack_http,
    attack_mqtt,
    attack_ocpp,
    attack_static,
    attack_tls,
)
from bench.attack_mqtt import ATTACKER, Broker, Watcher
from bench.attack_report import Row, render
from bench.attack_rig import (
    GRID_A,
    OPEN,
    PASSWORD,
    PROTECTED,
    ROOT,
    AttackCharger,
    bays_of,
    guarded,
    planned_grid_a,
    site_draw,
    square_toml,
    start_square,
)
from drivers.sim.charger16 import SimCharger
from drivers.sim.sdm630 import SimGridMeter
from tests.integration.mosquitto import Mosquitto
from tests.integration.ports import free_port

BUDGET_S = 300.0  # the whole run, whatever happens


async def _sync(value: Any) -> Any:
    return value


async def start_sims(
    url: str, open_charger: bool, tg: asyncio.TaskGroup, tasks: list[asyncio.Task]
) -> tuple[dict[str, SimCharger], list[str]]:
    """The chargers, each connected and booted (a refused one is left out and noted)."""
    sims: dict[str, SimCharger] = {
        "CP01": AttackCharger(url, "CP01", password=PASSWORD, reaction_s=0.5)
    }
    for cid in ("CP02", "CP03"):
        sims[cid] = SimCharger(url, cid, password=PASSWORD, reaction_s=0.5)
    if open_charger:
        sims[OPEN] = SimCharger(url, OPEN, reaction_s=0.5)
    notes, up = [], {}
    for cid, sim in sims.items():
        ready = asyncio.Event()
        task = tg.create_task(sim.run(ready), name=f"sim-{cid}")
        tasks.append(task)
        try:
            await asyncio.wait_for(ready.wait(), 8)
            up[cid] = sim
        except TimeoutError:
            task.cancel()
            notes.append(f"{cid} could not connect (refused by the gateway)")
    return up, notes


async def settle(sims: dict[str, SimCharger], timeout_s: float = 25.0) -> str:
    """Wait until the limits held are within the fuse for 2 s running (or the time is up)."""
    end, calm_since = time.monotonic() + timeout_s, None
    while time.monotonic() < end:
        if planned_grid_a(sims) <= GRID_A + 0.05:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= 2.0:
                return f"settled at {planned_grid_a(sims):.1f} A planned"
        else:
            calm_since = None
        await asyncio.sleep(0.1)
    return f"not settled within {timeout_s:g} s: {planned_grid_a(sims):.1f} A planned"


async def main_square(
    tmp: Path, broker: Broker, rows: list[Row], notes: list[str]
) -> None:
    sims_box: dict[str, SimCharger] = {}
    meter = SimGridMeter(site_draw(lambda: sims_box), refresh_s=0.1)
    ports = {"ocpp": free_port(), "api": free_port(), "mqtt": broker.port}
    async with asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        meter_task = tg.create_task(meter.run(ready), name="sim-grid-meter")
        await asyncio.wait_for(ready.wait(), 10)
        folder = tmp / "square"

        def make_text(**options: Any) -> str:
            return square_toml(
                ocpp_port=ports["ocpp"],
                api_port=ports["api"],
                mqtt_port=broker.port,
                meter_port=meter.port,
                mqtt_extra=broker.daemon_keys(folder),
                **options,
            )

        started = await asyncio.to_thread(
            start_square, folder, ports, make_text, refusable=OPEN
        )
        d = started.daemon
        notes.extend(started.notes)
        notes.append(
            f"API token: {'read from ' + str(folder / 'api-token') if started.token else 'none (the daemon made no token file)'}"
        )
        db = folder / "state" / "laadplein.db"
        tasks: list[asyncio.Task] = []
        try:
            async with asyncio.TaskGroup() as stg, Watcher(broker, ROOT) as mq:
                sims, sim_notes = await start_sims(
                    d.ocpp_url, started.open_charger, stg, tasks
                )
                notes.extend(sim_notes)
                sims_box.update(sims)
                try:
                    await attack_square(
                        d, sims, mq, broker, db, folder, ports, rows, notes
                    )
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            await asyncio.to_thread(d.stop)
            meter_task.cancel()


async def attack_square(
    d: Any,
    sims: dict[str, SimCharger],
    mq: Watcher,
    broker: Broker,
    db: Path,
    folder: Path,
    ports: dict[str, int],
    rows: list[Row],
    notes: list[str],
) -> None:
    def api(
        method: str, path: str, body: object = None, **kw: Any
    ) -> Awaitable[tuple[int, object]]:
        return d.aapi(method, path, body, **kw)

    async def sessions() -> list[dict]:
        status, got = await api("GET", "/api/sessions")
        return got if status == 200 and isinstance(got, list) else []

    async def status() -> dict:
        _, got = await api("GET", "/api/status")
        return got if isinstance(got, dict) else {}

    async def alarms() -> list[dict]:
        _, got = await api("GET", "/api/alarms")
        return got if isinstance(got, list) else []

    async def events() -> list[dict]:
        _, got = await api("GET", "/api/events?limit=1000")
        return got if isinstance(got, list) else []

    async def api_ok() -> bool:
        try:
            return (await api("GET", "/api/health", timeout_s=1.0))[0] == 200
        except OSError:
            return False

    attacker = sims["CP01"]
    # Every bay has a car parked (the honest sensors say so); five cars charge.
    for cid in sims:
        for bay in bays_of(cid):
            await attack_mqtt.publish(
                broker,
                f"{ROOT}/bays/{bay}/occupancy",
                {"occupied": True},
                retain=True,
                user=f"sensor-{bay}",
            )
    for cid, c in (("CP01", 1), ("CP02", 1), ("CP02", 2), ("CP03", 1), (OPEN, 1)):
        if cid in sims:
            await sims[cid].plug_in(c, car_max_a=32.0)
    notes.append("before the attacks: " + await settle(sims))
    honest = [
        (cid, c)
        for cid, c in (("CP02", 1), ("CP02", 2), ("CP03", 1), (OPEN, 1))
        if cid in sims
    ]

    await guarded(
        rows, "2", "lying meter", attack_ocpp.fuse_attacks(sims, attacker, honest), limit_s=90.0
    )
    await guarded(
        rows,
        "2",
        "stale current",
        attack_ocpp.stale_current(sims["CP03"], 1, "B05", status),
    )
    await guarded(
        rows,
        "1",
        "foreign transaction ids",
        attack_ocpp.foreign_transactions(
            attacker, [(sims["CP02"], 2), (sims["CP02"], 1)], db, sessions
        ),
    )
    await guarded(
        rows,
        "+",
        "unknown connector",
        attack_ocpp.unknown_connector(attacker, sessions),
    )
    await guarded(
        rows,
        "3",
        "passwordless charger",
        attack_ocpp.hijack(
            f"ws://127.0.0.1:{ports['ocpp']}/ocpp", sims.get(OPEN), OPEN, 1, sessions
        ),
    )
    await guarded(
        rows,
        "4",
        "occupancy",
        attack_mqtt.sensor_attacks(broker, ROOT, mq, api, "B06", "B03"),
    )
    await guarded(
        rows,
        "4",
        "forged light",
        attack_mqtt.forged_light(broker, ROOT, mq, api, "B02"),
    )
    await guarded(
        rows, "4", "forged acks", attack_mqtt.fake_acks(broker, ROOT, api, "B04")
    )
    await guarded(rows, "4", "client id", attack_mqtt.client_id_takeover(broker, d.log))

    token_row, details = await asyncio.to_thread(
        attack_http.token_attacks, ports["api"], d.token, "CP02"
    )
    rows.append(token_row)
    notes.append("token attacks: " + "; ".join(details))
    await guarded(
        rows,
        "6",
        "whitelist",
        asyncio.to_thread(
            lambda: list(
                attack_http.whitelist_attacks(ports["api"], d.token, "CP02", folder)
            )
        ),
    )
    await guarded(
        rows,
        "7",
        "hostile input",
        asyncio.to_thread(
            lambda: list(attack_http.hostile_inputs(ports["api"], d.token))
        ),
    )
    await guarded(rows, "7", "slow client", attack_http.slow_client(ports["api"]))
    await guarded(
        rows,
        "7",
        "connection cap",
        attack_http.connection_cap(ports["api"], d.proc.pid),
    )
    await guarded(
        rows, "9", "hostile text", attack_ocpp.hostile_text(attacker, d.log, events)
    )

    await guarded(
        rows,
        "10",
        "file modes",
        _sync(attack_static.file_modes(db, folder / "api-token")),
    )
    await guarded(
        rows,
        "3",
        "check",
        asyncio.to_thread(attack_static.check_warnings, d.config_text, folder),
    )
    await guarded(
        rows,
        "10",
        "CLI proxy",
        asyncio.to_thread(attack_static.cli_proxy, d.config_path),
    )

    await guarded(rows, "8", "flood", attack_doors.flood(attacker, 1, db, alarms))
    limit = ["prlimit", f"--pid={d.proc.pid}", "--nofile=256:256"]
    limited = await asyncio.to_thread(
        subprocess.run, limit, check=False, capture_output=True, text=True
    )
    notes.append(
        "daemon limited to 256 open files for the handshake flood"
        if limited.returncode == 0
        else f"prlimit failed: {limited.stderr.strip()}"
    )
    await guarded(
        rows,
        "8",
        "handshake flood",
        attack_doors.handshake_flood(ports["ocpp"], api_ok, d.log),
    )
    await guarded(
        rows,
        "3",
        "lockout",
        attack_doors.lockouts(f"ws://127.0.0.1:{ports['ocpp']}/ocpp", "CP02"),
    )
    notes.append(f"daemon still running at the end: {d.proc.poll() is None}")


@contextlib.contextmanager
def start_broker(notes: list[str]) -> Iterator[Mosquitto]:
    """mosquitto as the repository ships it for a square (a user per device, an access list) where the
    test rig knows how; else anonymous, as a broker set up without them."""
    users = getattr(mosquitto_rig, "BrokerUsers", None)
    if users is not None:
        bays = [(bay, True) for cid in (*PROTECTED, OPEN) for bay in bays_of(cid)]
        server = Mosquitto(secure=users(ROOT, bays))
        try:
            server.start()
        except (Exception, pytest.fail.Exception) as exc:  # noqa: BLE001 - fall back and say so
            server.close()
            notes.append(
                f"the shipped broker setup would not start ({str(exc)[:120]}): anonymous broker"
            )
        else:
            notes.append(
                f"broker: the shipped access list, a user per device; the hostile device is {ATTACKER}"
            )
            with server:
                yield server
            return
    notes.append("broker: anonymous (the test rig has no access-list setup)")
    with Mosquitto() as server:
        yield server


async def run() -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    rows.extend(attack_static.unit_rows())
    rows.extend(attack_static.supply_chain())
    rows.extend(attack_static.docs_rows())
    with (
        tempfile.TemporaryDirectory(prefix="laadplein-attack-") as tmp_text,
        start_broker(notes) as server,
    ):
        tmp = Path(tmp_text)
        secure = getattr(server, "secure", None)
        broker = Broker(
            server.port, dict(secure.passwords) if secure is not None else {}
        )
        try:
            async with asyncio.timeout(BUDGET_S):
                await main_square(tmp, broker, rows, notes)
                await attack_tls.tls_square(tmp, broker, rows, notes)
        except TimeoutError:
            notes.append(
                f"the run hit its {BUDGET_S:g} s budget; rows after that point are missing"
            )
    order = {f: i for i, f in enumerate([*map(str, range(1, 13)), "+"])}
    rows.sort(
        key=lambda r: order.get(r.finding, 99)
    )  # stable: each finding's rows in the order they ran
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args()
    t0 = time.monotonic()
    rows, notes = asyncio.run(run())
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    title = f"laadplein attack bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, code at {commit[:90]}"
    text = render(rows, title=title)
    text += (
        "\n\nnotes:\n"
        + "\n".join(f"- {n}" for n in notes)
        + f"\n- run took {time.monotonic() - t0:.0f} s\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
