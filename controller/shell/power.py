"""The power part of the cycle: freeze the square's inputs, let the core and the dispatch decide, send.

Builds the frozen inputs of `controller.core.sharing` and `battery.dispatch` from the live state
(readings older than three intervals count as missing), hands the decisions to smart charging
and the battery driver, and keeps the last decision for the snapshot and the console.

Kept in one file past 400 lines: the connectors' picture, the grid meter's balance and what was
taken off it for each connector are one reading of the live state at one instant, and the credits
only mean something beside the balance they came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from battery.dispatch import available_a, dispatch, reserve_soc_pct
from battery.dispatch_types import BatteryInput, Dispatch
from controller.core.currents import (
    CAR_STATUSES,
    CountedCurrent,
    CurrentClaim,
    count_current,
    grid_balance,
)
from controller.core.leases import telling_draw_a
from controller.core.sharing import share
from controller.core.sharing_types import Budget, ConnectorInput, Sharing
from controller.shell.charging import TX_MODE, SmartCharging, connector_key
from controller.shell.state import SquareState
from drivers.contract.clock import local_text, wire_ts
from drivers.contract.units import Phases3
from drivers.contract.words import CHARGING, SUSPENDED_EV, SUSPENDED_EVSE
from drivers.ocpp.profiles16 import grid_phase

log = logging.getLogger("laadplein.power")

DRAWING_STATUSES = frozenset({CHARGING, SUSPENDED_EV, SUSPENDED_EVSE})
ONE_PHASE_BELOW_A = 0.5  # a charger phase under this while another draws >= 1 A carries no car current


@dataclass(frozen=True)
class PowerView:
    """The last decision, for the snapshot: budget, sharing, setpoint and the grid as estimated."""

    budget: Budget
    sharing: Sharing
    dispatch: Dispatch | None
    grid_source: str  # "meter" | "estimate"


def bounded_max_a(max_a: float, cap_a: float | None, min_a: float) -> float:
    """The most a car may be given under someone else's bound (A): a bound below the minimum means 0."""
    if cap_a is None:
        return max_a
    return 0.0 if cap_a < min_a else min(max_a, cap_a)


class PowerControl:
    """Runs once per cycle after the lights: inputs, decisions, orders."""

    def __init__(self, state: SquareState, charging: SmartCharging, battery=None) -> None:
        self.state = state
        self.charging = charging
        self.battery = battery  # a drivers.contract.devices.BatteryDriver, or None
        self.view: PowerView | None = None
        self._last_limits: dict[str, float] = {}
        self._last_setpoint_w: float = 0.0
        self._charge_w = 0.0
        self._charge_refreshed_at: datetime | None = None
        self._other_a: list[float] | None = None  # the rest of the site (A per phase), last measured
        # per connector, how far the current taken off that measurement passed what it might draw (A)
        self._held_excess_a: dict[str, float] = {}
        self._logged_short: bool = False
        self._tx: dict[str, int] = {}  # key -> the transaction its lease belongs to
        # A restored session's charger may still hold a lease sent before the restart: up to the
        # bound the lease journal wrote down before sending it, until that runs out or a new lease
        # is accepted. A session recorded before leases were written down counts at its charger's
        # maximum for lease_s; one without a bound never got a lease (its safe default holds).
        now = state.clock()
        bounds = charging.journal.restored if charging.journal is not None else {}
        for c in state.cfg.chargers:
            for n, conn in state.chargers[c.id].connectors.items():
                if conn.transaction_id is None:
                    continue
                key = connector_key(c.id, n)
                self._tx[key] = conn.transaction_id
                bound = bounds.get(key)
                if bound is not None and bound.tx_id == conn.transaction_id and bound.ends_at > now:
                    charging.book.assume_held(key, bound.limit_a, now, bound.ends_at)
                    log.info("%s: transaction %d may still hold a lease of up to %.1f A until %s",
                             key, conn.transaction_id, bound.limit_a, wire_ts(bound.ends_at))
                elif conn.transaction_id in state.untracked_tx or charging.journal is None:
                    until = now + timedelta(seconds=state.cfg.control.lease_s)
                    charging.book.assume_held(key, float(c.max_current_a), now, until)

    def step(self, now: datetime, leases_allowed: bool = True) -> PowerView:
        """One decision at `now`; with `leases_allowed` False (an insane clock) only safe defaults hold."""
        st, cfg, ch = self.state, self.state.cfg, self.charging
        for c in cfg.chargers:
            live = st.chargers[c.id]
            ch.charger_seen(c.id, live.connected_at, live.online, live.booted_at)
        ch.count_defaults(now)
        connectors: list[ConnectorInput] = []
        transactions: dict[str, int] = {}
        wire_ids: dict[str, str] = {}  # OCPP 2.0.1: the charger's own transaction names
        leasable: set[str] = set()
        cars_a = [0.0, 0.0, 0.0]  # the cars' fresh phase currents on the grid's phases, for the meter balance
        credits: dict[str, float] = {}  # each connector's largest current in cars_a (its counted draw)
        for key in ch.keys:
            charger_id, n = key.split("/")
            conn = st.chargers[charger_id].connectors[int(n)]
            # A restored session whose charger has not reported yet counts as a car (status None).
            active = conn.transaction_id is not None and (conn.status in CAR_STATUSES or conn.status is None)
            if self._tx.get(key) != conn.transaction_id:
                if key in self._tx:
                    ch.book.end_session(key)  # the TxProfile ended with its transaction
                    st.bounds.transaction_ended(charger_id, int(n))
                self._held_excess_a.pop(key, None)  # what the last car reported is not the next one's
                if conn.transaction_id is None:
                    self._tx.pop(key, None)
                else:
                    self._tx[key] = conn.transaction_id
            online = st.chargers[charger_id].online
            controllable = active and online and conn.status is not None and ch.mode(charger_id) == TX_MODE and leases_allowed
            # Someone else's profiles: a bound on what the car may be given, or a TxProfile the charger
            # follows instead of the lease (control.md rule 1, "Other people's profiles").
            tx_name = st.connector_tx(charger_id, int(n))
            cap_a = st.bounds.cap_a(charger_id, int(n), tx_name, now)
            over_a = st.bounds.over_a(charger_id, int(n), tx_name, now) if active else None
            if over_a is not None:
                controllable = False
            counted = self.counted(charger_id, int(n), now)
            draw_a, draw_at = counted.draw_a, counted.at
            turn = ch.book.connector_state(key, now, draw_a, draw_at)
            for i, a in enumerate(counted.measured_a):
                if a:
                    cars_a[self.grid_phase_of(charger_id, int(n), i)] += a
            if counted.draw_a:
                credits[key] = counted.draw_a
            in_force_a = turn.in_force_a if controllable or ch.mode(charger_id) == TX_MODE else ch.fixed_a(key, now)
            if not leases_allowed and active:
                in_force_a = max(in_force_a, ch.book.in_force_a(key, now))
            if over_a is not None:
                in_force_a = min(float(cfg.charger(charger_id).max_current_a), max(over_a, in_force_a))
            if not active and (not online or ch.mode(charger_id) != TX_MODE):
                # A charger the gateway cannot steer now may start a session on any connector (offline
                # chargers do): each connector counts at what it would give a car that plugs in.
                active, in_force_a = True, self._unsteered_a(charger_id, key, now)
            elif not active and conn.status in DRAWING_STATUSES:
                # A car takes current on a transaction the gateway does not know (its start was lost,
                # or closed by mistake): it cannot get a lease, but it counts at what it may draw.
                active, in_force_a = True, ch.book.in_force_a(key, now)
            # A meter value may have been measured up to a cycle before it was read.
            draw_a = telling_draw_a(draw_a, draw_at, turn.changed_at, cfg.control.reaction_s,
                                    lag_s=cfg.control.period_s)
            bay = cfg.bay_for(charger_id, int(n))
            connectors.append(
                ConnectorInput(
                    key=key,
                    bay_id=bay.id if bay else key,
                    phases=self._phases(charger_id, int(n), counted),
                    active=active,
                    controllable=controllable,
                    max_a=bounded_max_a(float(cfg.charger(charger_id).max_current_a), cap_a, cfg.control.min_current_a),
                    draw_a=draw_a,
                    ev_suspended=conn.status == SUSPENDED_EV,
                    in_force_a=in_force_a if active else 0.0,
                    settling_from_a=turn.settling_from_a,
                    changed_at=turn.changed_at,
                    running_since=turn.running_since,
                    paused_since=turn.paused_since,
                    resume_offered_at=turn.resume_offered_at,
                )
            )
            if controllable and ch.may_lease(key, now):
                leasable.add(key)
                transactions[key] = conn.transaction_id
                if conn.charger_tx is not None:
                    wire_ids[key] = conn.charger_tx
        battery_in = self._battery_input(now)
        grid_a, source = self._grid_a(now, cars_a)
        # What the meter's balance took off for a connector counts in the load, whatever its limit:
        # else a charger reporting more than its car draws would lend the others room the grid lacks.
        connectors = [replace(c, credited_a=self._credit_a(c, source, credits)) for c in connectors]
        if source == "meter":
            self._held_excess_a = {c.key: max(0.0, c.credited_a - c.may_draw_a)
                                   for c in connectors}
        budget = Budget(
            grid_a=grid_a,
            battery_a=available_a(battery_in) if battery_in is not None else (0.0, 0.0, 0.0),
            min_current_a=cfg.control.min_current_a,
            reaction_s=cfg.control.reaction_s,
            turn_s=cfg.control.turn_s,
        )
        sharing = share(budget, connectors, now)
        ch.book.remember(sharing, now)
        orders = ch.book.orders(sharing, now, leasable)
        for order in orders:
            d = sharing.decision(order.key)
            before = self._last_limits.get(order.key)
            if order.why != "renew":
                log.info(
                    "%s: limit %s -> %.1f A (%s): %s",
                    self._where(order.key), "safe default" if before is None else f"{before:.1f} A",
                    order.limit_a, order.why, d.reason if d else "",
                )
            self._last_limits[order.key] = order.limit_a
        ch.send(orders, transactions, now, wire_ids)
        if not leases_allowed:
            # An insane clock: leases are Absolute, so take them back; only the safe defaults hold.
            for key in ch.keys:
                if ch.book.lease_ends_at(key) is not None and st.chargers[key.split("/")[0]].online:
                    ch.clear_lease(key)
        if sharing.short != self._logged_short:
            self._logged_short = sharing.short
            # Paused cars: a shortage (turns), or cars that take no current and gave their minimum away.
            if sharing.short:
                log.warning("not every car gets current: %s", "; ".join(sharing.reasons))
            else:
                log.info("every car gets current again")
        result = None
        if battery_in is not None:
            result = dispatch(battery_in, sharing.battery_needed_a, sharing.spare_a)
            if self.battery is not None:
                self.battery.command(result.setpoint_w)
            if battery_in.usable:
                # what a usable battery was last told to take (W), refreshed now: if its link goes,
                # it keeps taking that until its revert timeout
                self._charge_w, self._charge_refreshed_at = max(0.0, -result.setpoint_w), now
            if abs(result.setpoint_w - self._last_setpoint_w) >= 1000 or (result.setpoint_w == 0) != (self._last_setpoint_w == 0):
                log.info("battery setpoint %+.0f W: %s", result.setpoint_w, result.reason)
            self._last_setpoint_w = result.setpoint_w
        self.view = PowerView(budget, sharing, result, source)
        return self.view

    # ---- inputs ----------------------------------------------------------------------------

    def _unsteered_a(self, charger_id: str, key: str, now: datetime) -> float:
        """What a car plugging in on a connector the gateway cannot steer would draw (A)."""
        ch = self.charging
        if ch.mode(charger_id) == TX_MODE or (charger_id not in ch.setups and not ch.conformance):
            return ch.book.in_force_a(key, now)  # its safe default (set at the last connect)
        return ch.fixed_a(key, now)

    def _where(self, key: str) -> str:
        charger_id, n = key.split("/")
        bay = self.state.cfg.bay_for(charger_id, int(n))
        return f"{key}" + (f" (bay {bay.id})" if bay else "")

    def in_force_now(self, charger_id: str, n: int, now: datetime) -> float:
        """What a connector may draw now (A), as the fuse counts it: its lease or safe default, or what a
        charger the gateway cannot steer may give."""
        key = connector_key(charger_id, n)
        if self.charging.mode(charger_id) == TX_MODE:
            return self.charging.book.in_force_a(key, now)
        return self.charging.fixed_a(key, now)

    def counted(self, charger_id: str, n: int, now: datetime) -> CountedCurrent:
        """The connector's reported current as the square counts it at `now` (control.md rule 1)."""
        return count_current(claim_of(self.state, charger_id, n, self.in_force_now(charger_id, n, now)), now)

    def _phases(self, charger_id: str, n: int, counted: CountedCurrent) -> tuple[int, ...]:
        """The grid phases the car on this connector draws from (per phase rotation and meter values)."""
        cfg = self.state.cfg
        if cfg.grid.phases == 1:
            return (0,)
        rotation = self.charging.rotations.get(connector_key(charger_id, n))
        charger_phases = cfg.charger(charger_id).phases
        # Without a known rotation a one-phase car may be on any grid phase: it counts on all three.
        if charger_phases == 1:
            return (grid_phase(rotation, 0),) if rotation else (0, 1, 2)
        currents = counted.measured_a
        if currents[0] is not None and currents[0] >= 1.0 and all(
            a is not None and a < ONE_PHASE_BELOW_A for a in currents[1:]
        ):
            return (grid_phase(rotation, 0),) if rotation else (0, 1, 2)
        return (0, 1, 2)

    def _battery_input(self, now: datetime) -> BatteryInput | None:
        cfg = self.state.cfg
        b = cfg.battery
        if b is None:
            return None
        status = self.state.battery
        at = self.state.battery_at
        # A report older than three polls counts as missing (a driver that stopped reporting).
        fresh = at is not None and (now - at).total_seconds() <= 3 * b.poll_s + 1
        usable = status is not None and status.online and status.trusted and fresh
        local = now.astimezone(self.state.tz)
        return BatteryInput(
            usable=usable,
            soc_pct=status.soc_pct if usable else None,
            capacity_wh=b.capacity_kwh * 1000.0,
            max_charge_w=b.max_charge_w,
            max_discharge_w=b.max_discharge_w,
            soc_min_pct=b.soc_min_pct,
            soc_max_pct=b.soc_max_pct,
            reserve_soc_pct=reserve_soc_pct(b.reserve, b.soc_min_pct, local.hour * 60 + local.minute),
            voltage_v=cfg.grid.voltage_v,
            phases=cfg.grid.phases,
        )

    def _credit_a(self, c: ConnectorInput, source: str, credits: dict[str, float]) -> float:
        """The current taken off the grid meter's reading for connector `c` (A): this reading's.

        While the last trusted measurement holds, a car that reported more than it may draw, then (the
        held load is short of it) or now (nothing measures it), counts that much above what it may
        draw now; the others count at their limits as without a meter."""
        if source == "meter":
            return credits.get(c.key, 0.0)
        if self.state.cfg.grid_meter is None or not c.active:
            return 0.0
        may_a = c.may_draw_a
        excess_a = max(self._held_excess_a.get(c.key, 0.0), credits.get(c.key, 0.0) - may_a)
        return may_a + excess_a if excess_a > 0 else 0.0

    def _grid_a(self, now: datetime, cars_a: list[float]) -> tuple[Phases3, str]:
        """What the grid leaves for the chargers per phase (A), from the meter when it reads well.

        With a meter, the rest of the site is what the meter shows less the cars plus the battery's
        discharge (`controller.core.currents.grid_balance`: only currents that count are subtracted,
        never below 0). While the meter is missing, or reads less than the cars' own currents, the
        last trusted measurement (or base_load_a when higher) holds, plus the configured margin.
        """
        cfg = self.state.cfg
        phases = cfg.grid.phases
        limit_a = cfg.grid.limit_a
        other_a = [cfg.grid.base_load_a] * 3
        source = "estimate"
        meter_cfg = cfg.grid_meter
        if meter_cfg is not None:
            meter_a = fresh_grid_a(self.state, now)
            balance = grid_balance(meter_a, tuple(cars_a), battery_phase_a(self.state), phases) if meter_a is not None else None
            if balance is not None and not balance.trusted:
                self.state.rare(logging.WARNING, "grid-meter", "untrusted",
                                "grid meter reading not trusted (%s): the last trusted load is held with a %g A margin",
                                balance.why, meter_cfg.margin_a)
            if balance is not None and balance.trusted:
                self._other_a = list(balance.other_a)
                other_a = [max(other_a[p], balance.other_a[p]) for p in range(3)]
                source = "meter"
            else:
                held = self._other_a or other_a
                other_a = [max(other_a[p], held[p]) + meter_cfg.margin_a for p in range(3)]
        # A battery that went silent keeps charging at its last setpoint until its revert timeout.
        b = cfg.battery
        if b is not None and self._charge_w > 0 and self._charge_refreshed_at is not None:
            if (now - self._charge_refreshed_at).total_seconds() < b.revert_timeout_s + 2 * b.poll_s:
                status = self.state.battery
                if not (status is not None and status.online and status.trusted):
                    charge_a = self._charge_w / (cfg.grid.voltage_v * phases)
                    other_a = [a + charge_a for a in other_a]
        grid = tuple(max(0.0, limit_a - other_a[p]) if p < phases else 0.0 for p in range(3))
        return grid, source  # type: ignore[return-value]

    def grid_phase_of(self, charger_id: str, n: int, charger_phase: int) -> int:
        """The grid phase (0-2) that phase `charger_phase` of the charger's connector `n` is wired to."""
        if self.state.cfg.grid.phases == 1:
            return 0
        return grid_phase(self.charging.rotations.get(connector_key(charger_id, n)), charger_phase)

    def connector_view(self, charger_id: str, connector: int) -> dict:
        """What the API shows of a connector's limit: in force, safe default, lease end, why."""
        key = connector_key(charger_id, connector)
        now = self.state.clock()
        book = self.charging.book
        ends = book.lease_ends_at(key)
        d = self.view.sharing.decision(key) if self.view is not None else None
        return {
            "limit_a": self.limit_a(charger_id, connector),
            "safe_default_a": self.charging.safe_defaults.get(key),
            "lease_limit_a": book.lease_limit_a(key, now),
            # what the fuse counts for the connector: also a lease sent before a restart, or unanswered
            "in_force_a": round(self.in_force_now(charger_id, connector, now), 1),
            "lease_ends": wire_ts(ends) if ends is not None else None,
            "phase_rotation": self.charging.rotations.get(key),
            "why": d.reason if d is not None and d.reason else None,
        }

    def battery_note(self, now: datetime) -> str:
        """For the alarm of a battery that cannot be used: what power sharing does about it."""
        b = self.state.cfg.battery
        text = "power sharing plans as if the battery gives nothing"
        if b is not None and self._charge_w > 0 and self._charge_refreshed_at is not None:
            until = self._charge_refreshed_at + timedelta(seconds=b.revert_timeout_s + 2 * b.poll_s)
            if until > now:
                text += (f" and keeps the {self._charge_w / 1000:.1f} kW it was last told to charge with reserved"
                         f" until {local_text(until, self.state.cfg.site.timezone)} (its revert timeout)")
        return text

    def offline_note(self, charger_id: str, now: datetime) -> str:
        """For the alarm of a charger that lost its connection: what it may still draw, and how long."""
        book, tz = self.charging.book, self.state.cfg.site.timezone
        keys = [connector_key(charger_id, n) for n in self.state.chargers[charger_id].connectors]
        may_a = sum(book.in_force_a(k, now) for k in keys)
        ends = [e for e in (book.lease_ends_at(k) for k in keys) if e is not None and e > now]
        held = f"its cars keep their leases until {local_text(max(ends), tz)}, then the safe default" if ends else "its connectors hold their safe default"
        return f"{held}; the rest of the square shares the budget minus the {may_a:.1f} A per phase it may still draw"

    def limit_a(self, bay_charger: str, connector: int) -> float | None:
        """The limit a bay's car may draw now (A): its lease, or its safe default; None when no car."""
        if self.view is None:
            return None
        key = connector_key(bay_charger, connector)
        d = self.view.sharing.decision(key)
        conn = self.state.chargers[bay_charger].connectors[connector]
        if conn.transaction_id is None:
            return None
        now = self.state.clock()
        if self.charging.mode(bay_charger) != TX_MODE:
            return round(self.charging.fixed_a(key, now), 1)
        in_force = self.charging.book.in_force_a(key, now)
        return round(in_force, 1) if d is not None else None


def fresh_grid_a(state: SquareState, now: datetime) -> Phases3 | None:
    """The grid meter's currents per phase (A) when it reads now: online, and read within three polls."""
    meter_cfg, reading, at = state.cfg.grid_meter, state.grid_reading, state.grid_reading_at
    if meter_cfg is None or reading is None or not reading.online or reading.current_a is None or at is None:
        return None
    if now - at > timedelta(seconds=3 * meter_cfg.poll_s + 1):
        return None
    return tuple(reading.current_a)  # type: ignore[return-value]


def battery_phase_a(state: SquareState) -> float:
    """The battery's measured power as current per phase (A, positive = discharging), when trusted."""
    status = state.battery
    if status is None or not status.online or not status.trusted or status.power_w is None:
        return 0.0
    return status.power_w / (state.cfg.grid.voltage_v * state.cfg.grid.phases)


def claim_of(state: SquareState, charger_id: str, n: int, in_force_a: float) -> CurrentClaim:
    """A connector's last reading and status as `controller.core.currents.count_current` takes them."""
    conn = state.chargers[charger_id].connectors[n]
    charger = state.cfg.charger(charger_id)
    return CurrentClaim(
        status=conn.status,
        status_changed_at=conn.status_changed_at,
        current_a=conn.current_a,
        sample_at=conn.sample_at,
        max_a=float(charger.max_current_a),
        in_force_a=in_force_a,
        phases=charger.phases,
        stale_after_s=3 * state.cfg.control.meter_interval_s,
    )
