"""What every simulated charger does, whatever OCPP version it speaks: keep its connectors' statuses
and transactions, apply its charging profiles after its reaction time (they run out by time as
usual, also while the gateway is gone), charge the cars and read its meter, and let a tag its
local authorization list accepts start a transaction while the gateway is gone.

The link to the gateway is `drivers.sim.charger_link`; the wire layers (`drivers.sim.charger16` for
1.6, `drivers.sim.charger201` for 2.0.1) build the messages and answer the gateway's requests.
Statuses are kept in OCPP 1.6 words (Available, Preparing, Charging, ...) for both versions, the
words the rest of the square speaks; a 2.0.1 charger reports them in its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from drivers.contract.clock import wire_ts
from drivers.sim.charger_link import SimLink, TxId
from drivers.sim.charger_math import Follow, charging_status, follow_limit, plain_draw
from drivers.sim.outbox import CallLost, LocalList, SimChargerError, TxMessage
from drivers.sim.profiles import (
    MIN_CURRENT_A,
    TX_PURPOSE,
    VOLTAGE_V,
    ProfileStore,
    profile_limit_a,
    schedule_start,
)

logger = logging.getLogger("laadplein.sim.charger")

LIMIT_TICK_S = 0.05  # how often the charger re-evaluates its profiles
CHARGING_STATES = ("Charging", "SuspendedEV", "SuspendedEVSE")


class Car(Protocol):
    """A car model: `step` charges for `dt_s` at `offered_a` (A) and gives (power W, A on L1, L2, L3)."""

    full: bool

    def step(self, dt_s: float, offered_a: float) -> tuple[float, tuple[float, float, float]]: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_text() -> str:
    return wire_ts(utcnow())


class SimChargerCore(SimLink):
    """One simulated charger; `run` charges and keeps it connected until cancelled. A wire layer supplies the messages."""

    def __init__(
        self,
        url_base: str,
        charger_id: str,
        connectors: int = 2,
        *,
        max_current_a: float = 32.0,
        phases: int = 3,
        password: str | None = None,
        meter_interval_s: float = 1.0,
        reaction_s: float = 2.0,
    ) -> None:
        super().__init__(url_base, charger_id, password)
        self.connectors = connectors
        self.max_current_a = max_current_a
        self.phases = phases
        self.meter_interval_s = meter_interval_s
        self.reaction_s = reaction_s
        self.transactions: dict[int, TxId] = {}  # connector -> transaction id
        self.statuses: dict[int, str] = {c: "Available" for c in range(1, connectors + 1)}
        self.profiles = ProfileStore(connectors=connectors)
        self.limits_a: dict[int, float] = {c: max_current_a for c in range(1, connectors + 1)}  # applied (A)
        self.applied_history: list[tuple[datetime, int, float]] = []  # every change of an applied limit
        # connector -> (monotonic s, applied A) from the start on: what the charger let its car draw when
        self.applied_log: dict[int, list[tuple[float, float]]] = {
            c: [(time.monotonic(), max_current_a)] for c in range(1, connectors + 1)
        }
        self.energy_wh: dict[int, float] = {c: 0.0 for c in range(1, connectors + 1)}
        self.authorization = LocalList()
        self._tags: dict[int, str] = {}
        self._cars: dict[int, tuple[float, int]] = {}  # connector -> (car max A, car phases)
        self._car_models: dict[int, Car] = {}
        self._readings: dict[int, tuple[float, tuple[float, ...]]] = {}  # connector -> (W, A per phase)
        self._tx_start: dict[int, datetime] = {}
        self._follow: dict[int, Follow] = {c: Follow(max_current_a) for c in range(1, connectors + 1)}

    # --- what the wire layer provides ------------------------------------------------------------

    async def _status(self, connector: int, status: str, error_code: str = "NoError") -> None:
        """Report a connector's status (1.6 words) to the gateway now."""
        raise NotImplementedError

    async def _authorize(self, id_tag: str) -> str:
        """Ask the gateway about a tag: its status (Accepted, Blocked, ...)."""
        raise NotImplementedError

    async def _start(self, connector: int, id_tag: str, car_max_a: float, car_phases: int, car: Car | None = None) -> TxId:
        """Start a transaction (online, or offline for a tag the local list accepts); its id."""
        raise NotImplementedError

    def _stop_message(self, connector: int, tx_id: TxId, reason: str, tag: str | None, meter_wh: int, at: str) -> TxMessage:
        """Queue the message that ends a transaction, a caller waiting for its answer."""
        raise NotImplementedError

    def _reading_due(self, connector: int) -> None:
        """A meter interval passed while a transaction runs on the connector: report it (or not)."""
        raise NotImplementedError

    def _status_changed(self, connector: int, status: str) -> None:
        """A connector's status changed, connected or not (2.0.1 reports a charging state as a transaction event)."""

    def _charging_state(self, connector: int, status: str) -> None:
        """The meter loop saw the charging state move (Charging, SuspendedEV, SuspendedEVSE)."""
        if self.connected:
            self._queue(lambda: self._status(connector, status))

    async def _report_statuses(self) -> None:
        for connector in sorted(self.statuses):
            await self._status(connector, self.statuses[connector])

    @property
    def local_list(self) -> dict[str, str]:
        """The local authorization list as the gateway sent it: tag -> status."""
        return {tag: entry.status for tag, entry in self.authorization.entries.items()}

    @property
    def local_list_version(self) -> int:
        """The local authorization list's version (0: none yet)."""
        return self.authorization.version

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Charge and stay connected to the gateway until cancelled; `ready` is set after the first boot."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._limit_loop(), name=f"sim-{self.id}-limits")
            tasks.create_task(self._meter_loop(), name=f"sim-{self.id}-meter")
            await self._stay_connected(ready)

    def _deauthorize_later(self, connector: int, tx_id: TxId, status: str) -> None:
        """The gateway refused the tag of a transaction that runs (an offline start): end it, as a charger does."""
        if self.transactions.get(connector) != tx_id:
            return
        logger.info("sim %s: the gateway refused the tag of transaction %s (%s): stopping it", self.id, tx_id, status)

        async def deauthorize() -> None:
            if self.transactions.get(connector) == tx_id:
                await self.stop(connector, reason="DeAuthorized")

        self._queue(deauthorize)

    # --- what a driver at the charger does ----------------------------------------------------

    async def set_status(self, connector: int, status: str, error_code: str = "NoError") -> None:
        """Report a connector status (Available, Preparing, Charging, Faulted, ...); while the gateway is
        gone it is kept and reported with the others on reconnecting, as a charger does."""
        self.statuses[connector] = status
        self._status_changed(connector, status)
        if not self.connected:
            return
        try:
            await self._status(connector, status, error_code)
        except CallLost:
            pass  # reported again after the reconnect

    async def plug_in(
        self, connector: int, id_tag: str = "SIM-TAG-0001", *, car_max_a: float = 32.0, car_phases: int | None = None, car: Car | None = None
    ) -> TxId:
        """A car plugs in and its driver taps a card: Preparing, the gateway authorizes, the transaction starts; its id.

        Without a `car` model the car draws the applied limit, at most `car_max_a`, on `car_phases`.
        While the gateway is gone only a tag the local authorization list accepts (and that has not
        run out) may start; its transaction messages wait in the outbox. Otherwise refused
        (SimChargerError), also when the gateway refuses the tag; the car stays plugged in.
        """
        if not self.connected:
            status = self.authorization.status(id_tag, utcnow())
            if status != "Accepted":
                raise SimChargerError(f"sim {self.id} is not connected and its local list does not accept the tag ({status or 'unknown'})")
            await self.set_status(connector, "Preparing")
            return await self._start(connector, id_tag, car_max_a, car_phases or self.phases, car)
        await self.set_status(connector, "Preparing")
        status = await self._authorize(id_tag)
        if status != "Accepted":
            raise SimChargerError(f"sim {self.id}: tag refused ({status})")
        return await self._start(connector, id_tag, car_max_a, car_phases or self.phases, car)

    def _begin(self, connector: int, tx_id: TxId, id_tag: str, car_max_a: float, car_phases: int, car: Car | None) -> None:
        """A transaction runs on the connector from now on, with its car."""
        self.transactions[connector] = tx_id
        self._tx_start[connector] = utcnow()
        self._tags[connector] = id_tag
        self._cars[connector] = (car_max_a, min(car_phases, self.phases))
        if car is not None:
            self._car_models[connector] = car
        self._start_at_limit(connector)

    def _start_at_limit(self, connector: int) -> None:
        """A session starts at the limit in force (the safe default, or a lease that came with the
        answer), not at the charger's maximum followed by a correction."""
        target = self.profiles.limit_a(
            connector, utcnow(), self.transactions.get(connector), self._tx_start.get(connector), self.max_current_a, self.phases
        )
        self._follow[connector] = Follow(target)
        self._apply(connector, target)
        self._update_limits()

    async def _refused_at_start(self, connector: int, tx_id: TxId, status: str) -> None:
        """The gateway refused the tag in its answer to the start: the charger ends the transaction."""
        if self.transactions.get(connector) == tx_id:
            await self.stop(connector, reason="DeAuthorized")
        raise SimChargerError(f"sim {self.id}: tag refused at the start ({status}); transaction {tx_id} ended")

    async def stop(self, connector: int, reason: str = "Local") -> None:
        """The driver ends charging: the stop message (with the final register reading), status Finishing.

        Also while the gateway is gone: the stop waits in the outbox with its own time and
        reading. Connected, this returns once the gateway answered it (or the link went).
        """
        transaction_id = self.transactions.pop(connector, None)
        if transaction_id is None:
            raise SimChargerError(f"sim {self.id}: no transaction on connector {connector}")
        for per_connector in (self._cars, self._car_models, self._readings, self._tx_start):
            per_connector.pop(connector, None)  # type: ignore[attr-defined]
        self.profiles.end_transaction(connector)
        self._update_limits()
        energy, at = int(self.energy_wh[connector]), now_text()
        message = self._stop_message(connector, transaction_id, reason, self._tags.pop(connector, None), energy, at)
        try:
            await self._answer_to(message)
        except SimChargerError as exc:
            logger.warning("sim %s: %s", self.id, exc)  # the charger has stopped whatever the gateway says
        await self.set_status(connector, "Finishing")

    async def unplug(self, connector: int) -> None:
        """The car leaves: status Available (stopping a transaction still running)."""
        if connector in self.transactions:
            await self.stop(connector, reason="EVDisconnected")
        await self.set_status(connector, "Available")

    async def _reset(self, reason: str) -> None:
        """Reboot: stop every transaction with `reason`, close the link, connect and boot again at once."""
        for connector in sorted(self.transactions):
            await self.stop(connector, reason=reason)
        self._rebooting = self._must_boot = True
        await self._connection.close(1000, "reset")

    # --- limits, the car and the meter -------------------------------------------------------

    def applied_a(self, connector: int) -> float:
        """The limit the charger applies to the car on a connector (A per phase)."""
        return self.limits_a.get(connector, self.max_current_a)

    def tx_profile_in_force(self, connector: int, now: datetime) -> tuple[datetime | None, float] | None:
        """The TxProfile (the gateway's lease) giving the connector's limit at `now`: (when it runs out,
        None if never; its highest limit A per phase); None when no TxProfile gives one."""
        tx_id, tx_start = self.transactions.get(connector), self._tx_start.get(connector)
        if tx_id is None:
            return None
        for p in self.profiles.profiles(connector):
            if p.purpose != TX_PURPOSE or p.transaction_id not in (None, tx_id):
                continue
            if profile_limit_a(p, now, tx_start, self.phases) is None:
                continue
            ends = None if p.duration_s is None else schedule_start(p, now, tx_start) + timedelta(seconds=p.duration_s)
            per_a = 1.0 if p.rate_unit == "A" else 1.0 / (VOLTAGE_V * self.phases)
            return ends, max(period.limit * per_a for period in p.periods)
        return None

    def offered_a(self, connector: int) -> float:
        """The current the charger offers on a connector (A): the applied limit."""
        return self.applied_a(connector)

    def current_a(self, connector: int) -> float:
        """What the car on a connector draws per phase (A): the highest phase current the meter shows."""
        return max(self._reading(connector)[1], default=0.0) if connector in self.transactions else 0.0

    def _update_limits(self) -> None:
        """Apply each connector's limit in force `reaction_s` after it changed, as a charger's control loop does."""
        now, now_s = utcnow(), time.monotonic()
        for c in range(1, self.connectors + 1):
            target = self.profiles.limit_a(c, now, self.transactions.get(c), self._tx_start.get(c), self.max_current_a, self.phases)
            self._follow[c] = follow_limit(self._follow[c], target, now_s, self.reaction_s)
            self._apply(c, self._follow[c].applied_a)

    def _apply(self, connector: int, limit_a: float) -> None:
        """The charger now lets the car on `connector` draw up to `limit_a` (A per phase)."""
        if limit_a != self.limits_a[connector]:
            self.limits_a[connector] = limit_a
            self.applied_history.append((utcnow(), connector, limit_a))
            self.applied_log[connector].append((time.monotonic(), limit_a))

    async def _limit_loop(self) -> None:
        while True:
            self._update_limits()
            await asyncio.sleep(LIMIT_TICK_S)

    def _reading(self, connector: int) -> tuple[float, tuple[float, ...]]:
        """What the meter measures on a connector: (power W, current A per phase of the charger)."""
        if connector in self._car_models:
            power_w, currents = self._readings.get(connector, (0.0, ()))
            return power_w, tuple((list(currents) + [0.0] * 3)[: self.phases])
        car_max_a, car_phases = self._cars.get(connector, (0.0, self.phases))
        return plain_draw(self.applied_a(connector), car_max_a, car_phases, self.phases)

    async def _meter_loop(self) -> None:
        """Charge the cars every `meter_interval_s` and report to the outbox, connected or not."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.meter_interval_s)
            now = time.monotonic()
            dt_s, last = now - last, now
            for connector in sorted(self.transactions):
                applied, car = self.applied_a(connector), self._car_models.get(connector)
                if car is not None:
                    self._readings[connector] = car.step(dt_s, applied if applied >= MIN_CURRENT_A else 0.0)
                self.energy_wh[connector] += self._reading(connector)[0] * dt_s / 3600
                status = charging_status(applied, getattr(car, "full", False))
                if self.statuses.get(connector) in CHARGING_STATES and status != self.statuses[connector]:
                    self.statuses[connector] = status
                    self._charging_state(connector, status)
                self._reading_due(connector)
