"""The faults of the soak bench (`bench/soak.py`): their schedule, how each is done and healed, and
how the square is judged back to normal afterwards.

Every fault is done to the real processes and wires as it happens in the street: the daemon is
killed or stopped and started again, the broker is killed, the battery's Modbus link goes silent
or talks garbage, a charger drops off, a fixture fails, junk arrives on MQTT, and a raw WebSocket
client sends malformed OCPP frames under a charger id of the square.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from dataclasses import dataclass, field

import aiomqtt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from drivers.mqtt.link import ack_topic, occupancy_topic
from drivers.sim.square import SimSquare
from tests.integration.harness import Daemon
from tests.integration.mosquitto import Mosquitto

# The kinds that leave the daemon process alone come first, so that its memory is measured across
# one long life; the restarts come last.
STEADY_KINDS = (
    "ocpp_junk", "broker_kill", "battery_link", "charger_offline", "mqtt_junk", "fixture_fail", "battery_garbage",
)
RESTART_KINDS = ("daemon_kill_long", "daemon_kill", "daemon_term")
RESTART_SHARE = 0.3  # of the time after the warm-up
HOLD_S = {  # how long a fault lasts before it is healed, at most (s)
    "ocpp_junk": 0.0, "battery_link": 20.0, "charger_offline": 20.0, "mqtt_junk": 3.0,
    "fixture_fail": 20.0, "battery_garbage": 20.0, "daemon_kill": 5.0, "daemon_term": 3.0,
}
# The simulated sensors give up on a publish after 5 s without a broker, and a failed publish as
# a car arrives ends the simulator: the broker is back within that.
BROKER_DOWN_S = 2.0
LONG_KILL_PAST_LEASE_S = 10.0
RECOVERY_ESTIMATE_S = 15.0  # planning only: a heal and the way back to normal, as usual
RESTART_ALARM = "daemon_restart"  # the daemon's alarm after an unclean stop
OVERSIZE_BYTES = 70 * 1024  # above the gateway's 64 KiB frame limit


@dataclass(frozen=True)
class FaultPlan:
    """One scheduled fault (s from the end of the start-up)."""

    number: int
    kind: str
    at_s: float
    hold_s: float


@dataclass
class Injected:
    """What a fault did and saw while it lasted; `ok` is False when the fault itself showed a failure."""

    what: str
    notes: list[str] = field(default_factory=list)
    ok: bool = True
    tolerated: frozenset[str] = frozenset()  # alarm keys that may rightly stay after the heal
    healed_at: float = 0.0  # monotonic s: the fault ended (a restart was begun)


def hold_s(kind: str, every_s: float, lease_s: float) -> float:
    """How long a fault of `kind` lasts (s): its usual time, shorter when faults come often."""
    if kind == "daemon_kill_long":
        return lease_s + LONG_KILL_PAST_LEASE_S  # the leases run out and the chargers fall back
    if kind == "broker_kill":
        return BROKER_DOWN_S
    return min(HOLD_S[kind], max(2.0, 0.4 * every_s))


def plan_faults(*, total_s: float, warmup_s: float, tail_s: float, every_s: float, lease_s: float) -> list[FaultPlan]:
    """The run's faults: the steady kinds in rotation every `every_s` after the warm-up, then the restarts.

    A fault is planned only when it and its way back to normal fit before the tail; a long kill
    that does not fit becomes a short one.
    """
    def cost_s(kind: str) -> float:
        return hold_s(kind, every_s, lease_s) + RECOVERY_ESTIMATE_S

    end_s = total_s - tail_s
    restart_from_s = warmup_s + (1.0 - RESTART_SHARE) * max(0.0, end_s - warmup_s)
    plans: list[FaultPlan] = []
    t_s, i = warmup_s, 0
    while t_s + cost_s(STEADY_KINDS[i % len(STEADY_KINDS)]) <= restart_from_s:
        kind = STEADY_KINDS[i % len(STEADY_KINDS)]
        plans.append(FaultPlan(len(plans) + 1, kind, t_s, hold_s(kind, every_s, lease_s)))
        t_s, i = t_s + every_s, i + 1
    t_s, i = max(t_s, restart_from_s), 0
    while True:
        kind = RESTART_KINDS[i % len(RESTART_KINDS)]
        if kind == "daemon_kill_long" and t_s + cost_s(kind) > end_s:
            kind = "daemon_kill"
        if t_s + cost_s(kind) > end_s:
            return plans
        plans.append(FaultPlan(len(plans) + 1, kind, t_s, hold_s(kind, every_s, lease_s)))
        t_s, i = t_s + max(every_s, cost_s(kind)), i + 1


# ---- junk -----------------------------------------------------------------------------------

def junk_frames() -> list[tuple[str | bytes, bool | None]]:
    """Frames a broken or hostile charger may send, each with whether an answer is due (None: either)."""
    frames: list[tuple[str | bytes, bool | None]] = [
        ("not json at all", False),
        ('[2, "j01", "Heartbeat"]', True),  # a CALL without its payload
        ('[2, "j02", "Heartbeat", {}, "surplus"]', True),
        ('[2, "j03", "BootNotification", {"chargePointVendor": 5, "chargePointModel": "x"}]', True),
        ('[2, "j04", "NoSuchAction", {}]', True),
        ('[2, "j05", "MeterValues", {"connectorId": 1e999, "meterValue": []}]', True),
        ('[2, "j06", "MeterValues", {"connectorId": 1234567890123456789012345678901, "meterValue": []}]', True),
        ('[2, "j07", "Authorize", {"idTag": "' + "A" * 30 + '"}]', True),
        ('[2, "j08", "DataTransfer", {"vendorId": "' + "v" * 300 + '"}]', True),
        ('[2, "j09", "StatusNotification", {"connectorId": 99, "errorCode": "NoError", "status": "Available"}]', None),
        ('[2, "j10", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Exploded"}]', True),
        # a transaction id no session has: nobody's session may end
        ('[2, "j11", "StopTransaction", {"meterStop": 5, "timestamp": "2026-01-01T00:00:00Z", "transactionId": 2147483647}]',
         None),
        ('[2, "j12", "Heartbeat", {"deep": ' + "[" * 3000 + "]" * 3000 + "}]", None),
        ('[2, "' + "x" * 40 + '", "Heartbeat", {}]', None),  # a message id over 36 characters
        ("[" * 20000 + "]" * 20000, False),
        ('[3, "nobody-asked", {}]', False),
        ('[4, "nobody-asked", "GenericError", "", {}]', False),
        ("{}", False), ("null", False), ("[]", False), ("[2]", False), ('"a string"', False), ("[2, 5, 6, 7]", None),
        (b"\x00\x01\xfe\xff binary", False),
        (b'[2, "j13", "Heartbeat", {}]', None),
    ]
    frames += [(f'[2, "f{n:03d}", "Heartbeat", {{}}]', True) for n in range(150)]  # a flood of good ones
    frames += [(f'[2, "g{n:03d}", "Heartbeat", {{"x": ', False) for n in range(150)]  # and of cut-off ones
    return frames


@dataclass(frozen=True)
class ProbeResult:
    """What the gateway did with a burst of malformed frames."""

    sent: int
    answers_due: int
    answered: int
    held: bool  # the connection stayed up until the oversized frame
    oversize_close_code: int | None


async def ocpp_junk_burst(url: str) -> ProbeResult:
    """Connect as a charger, send every junk frame, then one oversized frame; what the gateway did."""
    frames = junk_frames()
    due = {str(json.loads(f)[1]) for f, want in frames if want}
    answered: set[str] = set()
    async with asyncio.timeout(60), connect(url, subprotocols=[Subprotocol("ocpp1.6")], open_timeout=5,
                                             max_size=2**20, close_timeout=2) as ws:
        async def read() -> None:
            # the gateway's own requests to this "charger" go unanswered, as from a charger that hangs
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, list) and len(msg) >= 2 and msg[0] in (3, 4) and isinstance(msg[1], str):
                    answered.add(msg[1])

        reader = asyncio.create_task(read(), name="probe-read")
        close_code = None
        try:
            for frame, _ in frames:
                await ws.send(frame)
            deadline = time.monotonic() + 3.0
            while not due <= answered and time.monotonic() < deadline and not reader.done():
                await asyncio.sleep(0.05)
            held = not reader.done()
            if held:
                await ws.send("[" + " " * OVERSIZE_BYTES + "]")
                try:
                    async with asyncio.timeout(5):
                        await ws.wait_closed()
                except TimeoutError:
                    pass
                close_code = ws.close_code
        except ConnectionClosed:
            held, close_code = False, ws.close_code
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return ProbeResult(len(frames) + held, len(due), len(due & answered), held, close_code)


MQTT_JUNK: tuple[bytes, ...] = (
    b"", b"garbage", b"{", b'{"occupied": "yes"}', b'{"occupied": null}', b"[1, 2, 3]", b"\xff\xfe\x00",
    b'{"occupied": ' + b"[" * 5000 + b"]" * 5000 + b"}", b"x" * 100_000, b'{"occupied": true, "extra": 1e999}',
)


async def mqtt_junk_burst(port: int, root: str, bays: list[str], rounds: int = 20) -> int:
    """Publish junk to the bays' occupancy (retained, as a sensor does) and ack topics; the count."""
    sent = 0
    async with aiomqtt.Client("127.0.0.1", port, timeout=5, identifier=f"soak-junk-{time.monotonic_ns()}") as client:
        for r in range(rounds):
            for bay in bays:
                payload = MQTT_JUNK[(r + sent) % len(MQTT_JUNK)]
                await client.publish(occupancy_topic(root, bay), payload, qos=1, retain=True)
                await client.publish(ack_topic(root, bay), payload, qos=0)
                sent += 2
            await client.publish(f"{root}/bays/NO-SUCH-BAY/occupancy", b'{"occupied": true}', qos=0)
            await client.publish(f"{root}/bays/{bays[0]}/unknown/level", b"?", qos=0)
            sent += 2
    return sent


# ---- doing and healing ----------------------------------------------------------------------

class FaultInjector:
    """Does one planned fault to the running square and heals it."""

    def __init__(self, *, daemon: Daemon, broker: Mosquitto, sim: SimSquare, root: str, probe_url: str,
                 lease_s: float, safe_default_a: float) -> None:
        self.daemon, self.broker, self.sim = daemon, broker, sim
        self.root, self.probe_url = root, probe_url
        self.lease_s, self.safe_default_a = lease_s, safe_default_a
        self._counts: dict[str, int] = {}

    def _turn(self, kind: str) -> int:
        """How many faults of this kind came before: targets and modes rotate with it."""
        n = self._counts.get(kind, 0)
        self._counts[kind] = n + 1
        return n

    async def alarm_keys(self) -> set[str]:
        """The daemon's active alarm keys (empty when it does not answer)."""
        try:
            status, alarms = await self.daemon.aapi("GET", "/api/alarms", timeout_s=3)
        except OSError:
            return set()
        return {a["key"] for a in alarms} if status == 200 else set()

    async def run(self, plan: FaultPlan) -> Injected:
        """Inject, hold for `plan.hold_s`, heal; what happened meanwhile."""
        before = await self.alarm_keys()
        done = await getattr(self, f"_{plan.kind}")(plan, before)
        done.healed_at = done.healed_at or time.monotonic()
        return done

    async def _noticed(self, before: set[str], done: Injected) -> None:
        new = sorted(await self.alarm_keys() - before)
        done.notes.append("daemon raised " + (", ".join(new) if new else "no alarm"))

    async def _restart(self, done: Injected, *, unclean: bool) -> None:
        """Start the daemon again (the service manager's job; one retry); it must report an unclean stop, and only that."""
        done.healed_at = time.monotonic()
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(self.daemon.start)
                break
            except RuntimeError as exc:
                done.ok = False
                done.notes.append(f"start {attempt} failed: {str(exc).splitlines()[0]}")
        else:
            raise RuntimeError("the daemon does not start again")
        reported = RESTART_ALARM in await self.alarm_keys()
        done.notes.append(f"{RESTART_ALARM} {'raised' if reported else 'not raised'}")
        done.ok = done.ok and reported == unclean

    async def _daemon_kill(self, plan: FaultPlan, before: set[str]) -> Injected:
        done = Injected(f"daemon SIGKILL, down {plan.hold_s:g} s")
        await asyncio.to_thread(self.daemon.kill)
        await asyncio.sleep(plan.hold_s)
        await self._restart(done, unclean=True)
        return done

    async def _daemon_kill_long(self, plan: FaultPlan, before: set[str]) -> Injected:
        done = Injected(f"daemon SIGKILL, down {plan.hold_s:g} s (past lease_s {self.lease_s:g} s)")
        await asyncio.to_thread(self.daemon.kill)
        await asyncio.sleep(plan.hold_s)
        # The leases have run out: every charger must be back at its safe default by itself.
        held = [c.applied_a(n) for c in self.sim.chargers.values() for n in c.transactions]
        if held:
            done.notes.append(f"after the leases: highest applied limit {max(held):.1f} A "
                              f"(safe default {self.safe_default_a:.1f} A)")
            done.ok = max(held) <= self.safe_default_a + 0.05
        await self._restart(done, unclean=True)
        return done

    async def _daemon_term(self, plan: FaultPlan, before: set[str]) -> Injected:
        done = Injected(f"daemon SIGTERM, down {plan.hold_s:g} s")
        t0 = time.monotonic()
        try:
            code = await asyncio.to_thread(self.daemon.stop, signal.SIGTERM)
            done.notes.append(f"exit {code} after {time.monotonic() - t0:.1f} s")
            done.ok = code == 0
        except subprocess.TimeoutExpired:
            done.notes.append("no exit within 10 s of SIGTERM (killed)")
            done.ok = False
        await asyncio.sleep(plan.hold_s)
        await self._restart(done, unclean=False)
        return done

    async def _broker_kill(self, plan: FaultPlan, before: set[str]) -> Injected:
        done = Injected(f"mosquitto SIGKILL, down {plan.hold_s:g} s")
        await asyncio.to_thread(self.broker.kill)
        await asyncio.sleep(plan.hold_s)
        done.healed_at = time.monotonic()
        await asyncio.to_thread(self.broker.start)
        return done

    async def _battery_link(self, plan: FaultPlan, before: set[str]) -> Injected:
        return await self._battery(plan, before, ("silent", "exception")[self._turn(plan.kind) % 2])

    async def _battery_garbage(self, plan: FaultPlan, before: set[str]) -> Injected:
        return await self._battery(plan, before, "garbage")

    async def _battery(self, plan: FaultPlan, before: set[str], mode: str) -> Injected:
        done = Injected(f"battery {mode} for {plan.hold_s:g} s")
        self.sim.inject("battery", mode)
        await asyncio.sleep(plan.hold_s)
        await self._noticed(before, done)
        self.sim.inject("battery", "none")
        return done

    async def _charger_offline(self, plan: FaultPlan, before: set[str]) -> Injected:
        ids = sorted(self.sim.chargers)
        charger_id = ids[self._turn(plan.kind) % len(ids)]
        done = Injected(f"charger {charger_id} offline for {plan.hold_s:g} s")
        self.sim.inject("charger", "offline", charger_id)
        await asyncio.sleep(plan.hold_s)
        await self._noticed(before, done)
        self.sim.inject("charger", "none", charger_id)
        return done

    async def _fixture_fail(self, plan: FaultPlan, before: set[str]) -> Injected:
        turn = self._turn(plan.kind)
        bays = [b.id for b in self.sim.cfg.bays]
        bay, mode = bays[(turn * 5) % len(bays)], ("no_ack", "wrong_color")[turn % 2]
        # A mended fixture acks again from its next command on; until then its alarm rightly stays.
        done = Injected(f"fixture {bay} {mode} for {plan.hold_s:g} s",
                        tolerated=frozenset({f"fixture_silent:{bay}", f"fixture_wrong:{bay}"}))
        self.sim.inject("fixture", mode, bay)
        await asyncio.sleep(plan.hold_s)
        await self._noticed(before, done)
        self.sim.inject("fixture", "none", bay)
        return done

    async def _mqtt_junk(self, plan: FaultPlan, before: set[str]) -> Injected:
        turn = self._turn(plan.kind)
        sensed = [b.id for b in self.sim.cfg.bays if b.sensor]
        bays = [sensed[(turn * 3 + k) % len(sensed)] for k in range(3)]
        done = Injected(f"{await mqtt_junk_burst(self.broker.port, self.root, bays)} junk MQTT messages on {', '.join(bays)}")
        await asyncio.sleep(plan.hold_s)
        await self._noticed(before, done)
        for bay in bays:  # the sensors report the truth again (retained), as on their next reading
            async with asyncio.timeout(10):
                await self.sim.fixtures.set_occupancy(bay, bay in self.sim.visits)
        return done

    async def _ocpp_junk(self, plan: FaultPlan, before: set[str]) -> Injected:
        who = self.probe_url.rsplit("/", 1)[1]
        try:
            r = await ocpp_junk_burst(self.probe_url)
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            return Injected(f"malformed OCPP frames as {who}: no connection ({type(exc).__name__}: {exc})", ok=False)
        done = Injected(f"{r.sent} malformed OCPP frames as {who}", ok=r.held and r.answered == r.answers_due
                        and r.oversize_close_code == 1009)
        done.notes.append(f"answered {r.answered}/{r.answers_due} due; connection "
                          + ("held" if r.held else "DROPPED during the burst")
                          + f"; the oversized frame closed it with code {r.oversize_close_code}")
        await asyncio.sleep(plan.hold_s)
        return done


async def tidy_simulator(sim: SimSquare, counts: dict[str, int]) -> None:
    """End what a car left behind in the simulator while its charger could not reach the gateway.

    A car that drives off during an outage cannot have its StopTransaction (nor the Available)
    sent, and its bay stays blocked; a real charger sends them once the gateway is back, and
    so does this, every 2 s, for every connector without a car on its bay.
    """
    while True:
        await asyncio.sleep(2.0)
        for bay in sim.cfg.bays:
            charger, n = sim.chargers[bay.charger], bay.connector
            if not charger.connected or bay.id in sim.visits:
                continue
            try:
                async with asyncio.timeout(15):
                    if n in charger.transactions:
                        await charger.unplug(n)
                        counts["late stops"] = counts.get("late stops", 0) + 1
                    elif charger.statuses.get(n) != "Available":
                        await charger.set_status(n, "Available")
                        counts["connectors freed"] = counts.get("connectors freed", 0) + 1
            except Exception:  # noqa: BLE001 - the gateway went away again: next round
                counts["tries failed"] = counts.get("tries failed", 0) + 1


# ---- back to normal -------------------------------------------------------------------------

class Recovery:
    """Judges whether the square is back to normal: the daemon up and healthy, every simulated
    charger online on both sides, and no alarm left but the background ones."""

    def __init__(self, daemon: Daemon, sim: SimSquare, probe_id: str) -> None:
        self.daemon, self.sim, self.probe_id = daemon, sim, probe_id
        self.tolerated: set[str] = set()

    def background(self, key: str) -> bool:
        """Alarms that are nobody's fault: the probe's charger id, full cars, fixtures awaiting a command.

        The restart alarm waits for every configured charger to have been back, and the probe's
        id is configured without a charger behind it: it rightly stays (up to ten minutes).
        """
        return (key.endswith(":" + self.probe_id) or key.startswith("not_resuming:") or key == RESTART_ALARM
                or key in self.tolerated)

    async def health_within(self, limit_s: float, since: float) -> float | None:
        """Seconds from `since` to the first healthy answer of /api/health; None when not within `limit_s`."""
        while time.monotonic() - since <= limit_s:
            try:
                status, body = await self.daemon.aapi("GET", "/api/health", timeout_s=2)
                if status == 200 and body.get("ok"):
                    return time.monotonic() - since
            except OSError:
                pass
            await asyncio.sleep(0.2)
        return None

    async def normal_within(self, limit_s: float) -> str | None:
        """Wait until the square is back to normal: None when it is, else why not after `limit_s`."""
        deadline = time.monotonic() + limit_s
        while True:
            why = await self.why_not_normal()
            if why is None or time.monotonic() > deadline:
                return why
            await asyncio.sleep(0.5)

    async def why_not_normal(self) -> str | None:
        if self.daemon.proc is None or self.daemon.proc.poll() is not None:
            return "daemon not running"
        try:
            status, health = await self.daemon.aapi("GET", "/api/health", timeout_s=2)
            if status != 200 or not health.get("ok"):
                return f"health answers {status}"
            gone = sorted(cid for cid, c in self.sim.chargers.items() if not c.connected)
            if gone:
                return "simulated chargers not connected: " + ", ".join(gone)
            status, chargers = await self.daemon.aapi("GET", "/api/chargers", timeout_s=2)
            if status != 200:
                return f"chargers answer {status}"
            offline = sorted(c["id"] for c in chargers if c["id"] in self.sim.chargers and not c["online"])
            if offline:
                return "the daemon sees offline: " + ", ".join(offline)
            status, alarms = await self.daemon.aapi("GET", "/api/alarms", timeout_s=2)
            if status != 200:
                return f"alarms answer {status}"
        except OSError as exc:
            return f"admin API: {exc}"
        unexpected = sorted(a["key"] for a in alarms if not self.background(a["key"]))
        return ("alarms " + ", ".join(unexpected)) if unexpected else None
