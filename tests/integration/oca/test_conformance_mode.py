"""Conformance mode (control.md): for a certification run such as the OCTT's, the gateway sends the
chargers no request of its own (no set-up, no leases, no status triggers, no local-list push), counts
every charger at its maximum with an alarm saying so, and still carries the operator's requests from the
admin API. A strict test tool then sees only the requests it triggered."""

from __future__ import annotations

import asyncio

import pytest
from ocpp import v16, v201

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    boot16,
    boot201,
    call_api,
    charger,
    connect,
    square_fixture,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration

QUIET_S = 7.0  # longer than the 5 s after which the gateway would ask for a silent connector's status

square = square_fixture("oca-conformance", chargers=2, connectors=2, grid_limit_a=32, auth="local_list",
                        ocpp="conformance_mode = true\n")


async def test_a_16_charge_point_hears_only_what_the_operator_sends(square: Daemon) -> None:
    async with connect(square, "CP01") as cp:
        # a change of the local list would be pushed to every charger: not in conformance mode
        code, _ = await square.aapi("PUT", "/api/tokens", {"tag": "CONF-TAG-1", "status": "Accepted"})
        assert code in (200, 201)
        await boot16(cp, connectors=1)  # connector 2 stays silent: it would be asked for its status
        await cp.ask(v16.call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
        start = await cp.ask(v16.call.StartTransaction(connector_id=1, id_tag="CONF-TAG-1", meter_start=0, timestamp=wire_time()))
        assert start.id_tag_info["status"] == "Accepted"
        await cp.ask(v16.call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        await asyncio.sleep(QUIET_S)
        assert [f.action for f in cp.received] == [], "the gateway sent requests of its own"
        assert start.transaction_id > 0
        seen = charger(square, "CP01")
        assert seen["profiles"] == "conformance"
        # counted at its maximum (32 A) on both connectors: the charger is not steered
        assert [(c["limit_a"], c["in_force_a"]) for c in seen["connectors"]] == [(32.0, 32.0), (None, 32.0)], seen["connectors"]
        # the operator's requests still go out, and come back whole
        code, _ = await call_api(square, "CP01", "GetConfiguration", {"key": ["MeterValueSampleInterval"]})
        assert code == 200 and [f.action for f in cp.received] == ["GetConfiguration"]
    alarms = square.api("GET", "/api/alarms")[1]
    assert any(a["key"] == "conformance_mode" for a in alarms), alarms


async def test_a_201_station_hears_only_what_the_operator_sends(square: Daemon) -> None:
    async with connect(square, "CP02", "2.0.1") as cs:
        await boot201(cs, evses=0)  # no status at all
        await asyncio.sleep(QUIET_S)
        assert [f.action for f in cs.received] == [], "the gateway sent requests of its own"
        request = {"getVariableData": [{"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}}]}
        code, _ = await call_api(square, "CP02", "GetVariables", request)
        assert code == 200 and [f.action for f in cs.received] == ["GetVariables"]
        await cs.ask(v201.call.StatusNotification(timestamp=wire_time(), connector_status="Available", evse_id=1, connector_id=1))
        await until(lambda: charger(square, "CP02")["profiles"] == "conformance", "CP02 in conformance mode")
