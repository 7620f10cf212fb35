"""Smart charging in each OCPP version's words: one small adapter per version behind one interface,
so that `controller.shell.charging` sets chargers up and sends leases without knowing which version a
charger speaks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from drivers.contract.backend import CallErrorReceived, InvalidRequest
from drivers.contract.orders import Order
from drivers.ocpp import profiles16 as p16
from drivers.ocpp import profiles201 as p201

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]  # (action, payload) -> answer


class Dialect(Protocol):
    """What smart charging sends, in one OCPP version."""

    version: str

    def safe_defaults(self, limits_a: dict[int, float]) -> list[tuple[str, dict]]: ...

    def clear_profile(self, profile_id: int) -> dict: ...

    def charger_max(self, limit_a: float, now: datetime) -> dict: ...

    def lease(self, order: Order, connector_id: int, transaction_id: int | str, now: datetime, lease_s: float) -> dict: ...

    async def configure_meter(self, call: Call, meter_interval_s: int) -> list[str]: ...

    async def read_rotation(self, call: Call, connectors: int) -> dict[int, str]: ...


class Dialect16:
    """OCPP 1.6J: connectors, configuration keys."""

    version = "ocpp1.6"

    def safe_defaults(self, limits_a: dict[int, float]) -> list[tuple[str, dict]]:
        return [(f"connector {n}", p16.safe_default(n, limit_a)) for n, limit_a in sorted(limits_a.items())]

    def clear_profile(self, profile_id: int) -> dict:
        return {"id": profile_id}

    def charger_max(self, limit_a: float, now: datetime) -> dict:
        return p16.charger_max(limit_a, now)

    def lease(self, order: Order, connector_id: int, transaction_id: int | str, now: datetime, lease_s: float) -> dict:
        return p16.lease(order, connector_id, int(transaction_id), now, lease_s)

    async def configure_meter(self, call: Call, meter_interval_s: int) -> list[str]:
        problems: list[str] = []
        for payload in p16.meter_settings(meter_interval_s):
            try:
                status = (await call("ChangeConfiguration", payload)).get("status")
                if status == "Rejected" and payload["key"] == "MeterValuesSampledData":
                    # some chargers refuse a measurand they lack (Current.Offered): ask without it
                    payload = {**payload, "value": p16.SAMPLED_DATA_BASIC}
                    status = (await call("ChangeConfiguration", payload)).get("status")
                if status not in ("Accepted", "RebootRequired"):
                    problems.append(f"{payload['key']} = {payload['value']} {status}")
            except (CallErrorReceived, InvalidRequest) as exc:
                problems.append(f"setting {payload['key']} failed: {exc}")
        return problems

    async def read_rotation(self, call: Call, connectors: int) -> dict[int, str]:
        answer = await call("GetConfiguration", {"key": ["ConnectorPhaseRotation"]})
        return p16.phase_rotation(answer, connectors)


class Dialect201:
    """OCPP 2.0.1: EVSEs (one connector each), the device model's variables."""

    version = "ocpp2.0.1"

    def safe_defaults(self, limits_a: dict[int, float]) -> list[tuple[str, dict]]:
        return [(f"EVSE {p['evseId']}", p) for p in p201.safe_defaults(limits_a)]

    def clear_profile(self, profile_id: int) -> dict:
        return p201.clear_profile(profile_id)

    def charger_max(self, limit_a: float, now: datetime) -> dict:
        return p201.charger_max(limit_a, now)

    def lease(self, order: Order, connector_id: int, transaction_id: int | str, now: datetime, lease_s: float) -> dict:
        return p201.lease(order, connector_id, str(transaction_id), now, lease_s)

    async def configure_meter(self, call: Call, meter_interval_s: int) -> list[str]:
        try:
            refused = p201.refused_settings(await call("SetVariables", p201.meter_settings(meter_interval_s)))
            if "TxUpdatedMeasurands" in refused:
                # some chargers refuse a measurand they lack (Current.Offered): ask again without it;
                # the second answer covers every variable
                answer = await call("SetVariables", p201.meter_settings(meter_interval_s, basic=True))
                refused = p201.refused_settings(answer)
        except (CallErrorReceived, InvalidRequest) as exc:  # InvalidRequest: beyond the station's message limits
            return [f"SetVariables failed: {exc}"]
        return [f"SampledDataCtrlr.{name} {status}" for name, status in sorted(refused.items())]

    async def read_rotation(self, call: Call, connectors: int) -> dict[int, str]:
        return p201.phase_rotation(await call("GetVariables", p201.rotation_query(connectors)), connectors)


DIALECTS: dict[str, Dialect] = {"ocpp1.6": Dialect16(), "ocpp2.0.1": Dialect201()}


def dialect(version: str | None) -> Dialect:
    """The adapter of a negotiated subprotocol (1.6 when unknown)."""
    return DIALECTS.get(version or "", DIALECTS["ocpp1.6"])
