"""The real daemon with `ocpp.auth = "local_list"` keeping chargers' local lists in step: bare chargers on
the ocpp library's v16 and v201 ChargePoint (which check every request against the official schemas)
that hold a list the way OCPP says a charger does."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from ocpp import v16, v201
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.routing import on

from tests.integration.harness import Daemon, square_toml, wait_until
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

TAGS = {"04A1B2C3D4": "Accepted", "04E5F6A7B8": "Accepted", "BLOCKED001": "Blocked"}


@dataclass
class Held:
    """What a charger keeps of its local list across its connections, and the lists it was sent."""

    version: int = 0
    per_message: int = 50
    supports: bool = True
    entries: dict[str, dict] = field(default_factory=dict)  # tag -> its info, snake_case as the library hands it
    sends: list[tuple[str, int, list]] = field(default_factory=list)  # (update type, version, items)
    variables: dict[tuple[str, str], str] = field(default_factory=dict)

    def apply(self, update_type: str, version: int, items: list[dict], tag_of, info_of) -> str:
        """OCPP 1.6 §5.15 / 2.0.1 D01: a Differential must raise the version; a message takes at most per_message."""
        self.sends.append((update_type, version, items))
        if len(items) > self.per_message:
            return "Failed"
        if update_type == "Differential" and version <= self.version:
            return "VersionMismatch"
        if update_type == "Full":
            self.entries.clear()
        for item in items:
            info = info_of(item)
            if info is None:
                self.entries.pop(tag_of(item), None)
            else:
                self.entries[tag_of(item)] = info
        self.version = version
        return "Accepted"

    def statuses(self) -> dict[str, str]:
        return {tag: info["status"] for tag, info in self.entries.items()}


class Charger16(v16.ChargePoint):
    """An OCPP 1.6J charger with a local list (or, with `held.supports` false, without one)."""

    def __init__(self, charger_id: str, connection: Any, held: Held) -> None:
        super().__init__(charger_id, connection)
        self.held = held

    async def boot(self) -> None:
        answer = await self.call(v16.call.BootNotification(charge_point_model="M1", charge_point_vendor="Test"))
        assert answer.status == "Accepted"

    @on("ChangeConfiguration")
    def change_configuration(self, key: str, value: str, **_: Any) -> Any:
        if key == "LocalAuthListEnabled" and not self.held.supports:
            return v16.call_result.ChangeConfiguration(status="NotSupported")
        self.held.variables[("", key)] = value
        return v16.call_result.ChangeConfiguration(status="Accepted")

    @on("GetConfiguration")
    def get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        known = {"SendLocalListMaxLength": str(self.held.per_message)} if self.held.supports else {}
        wanted = key or sorted(known)
        return v16.call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": known[k]} for k in wanted if k in known],
            unknown_key=[k for k in wanted if k not in known] or None,
        )

    @on("GetLocalListVersion")
    def get_local_list_version(self, **_: Any) -> Any:
        if not self.held.supports:
            raise OcppNotImplemented(description="no local list")
        return v16.call_result.GetLocalListVersion(list_version=self.held.version)

    @on("SendLocalList")
    def send_local_list(self, list_version: int, update_type: str, local_authorization_list: list | None = None, **_: Any) -> Any:
        status = self.held.apply(update_type, list_version, local_authorization_list or [],
                                 lambda i: i["id_tag"], lambda i: i.get("id_tag_info"))
        return v16.call_result.SendLocalList(status=status)

    @on("TriggerMessage")
    def trigger_message(self, **_: Any) -> Any:
        return v16.call_result.TriggerMessage(status="Accepted")

    @on("SetChargingProfile")
    def set_charging_profile(self, **_: Any) -> Any:
        return v16.call_result.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def clear_charging_profile(self, **_: Any) -> Any:
        return v16.call_result.ClearChargingProfile(status="Accepted")


class Charger201(v201.ChargePoint):
    """An OCPP 2.0.1 charging station with a local list."""

    def __init__(self, charger_id: str, connection: Any, held: Held) -> None:
        super().__init__(charger_id, connection)
        self.held = held
        held.variables.setdefault(("LocalAuthListCtrlr", "ItemsPerMessage"), str(held.per_message))
        held.variables.setdefault(("ChargingStation", "PhaseRotation"), "RST")

    async def boot(self) -> None:
        answer = await self.call(v201.call.BootNotification(charging_station={"model": "M1", "vendor_name": "Test"}, reason="PowerUp"))
        assert answer.status == "Accepted"

    @on("SetVariables")
    def set_variables(self, set_variable_data: list, **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            self.held.variables[(item["component"]["name"], item["variable"]["name"])] = item["attribute_value"]
            results.append({"attribute_status": "Accepted", "component": item["component"], "variable": item["variable"]})
        return v201.call_result.SetVariables(set_variable_result=results)

    @on("GetVariables")
    def get_variables(self, get_variable_data: list, **_: Any) -> Any:
        results = []
        for item in get_variable_data:
            value = self.held.variables.get((item["component"]["name"], item["variable"]["name"]))
            entry = {"component": item["component"], "variable": item["variable"]}
            results.append({**entry, "attribute_status": "Accepted", "attribute_value": value} if value
                           else {**entry, "attribute_status": "UnknownVariable"})
        return v201.call_result.GetVariables(get_variable_result=results)

    @on("GetLocalListVersion")
    def get_local_list_version(self, **_: Any) -> Any:
        return v201.call_result.GetLocalListVersion(version_number=self.held.version)

    @on("SendLocalList")
    def send_local_list(self, version_number: int, update_type: str, local_authorization_list: list | None = None, **_: Any) -> Any:
        status = self.held.apply(update_type, version_number, local_authorization_list or [],
                                 lambda i: i["id_token"]["id_token"], lambda i: i.get("id_token_info"))
        return v201.call_result.SendLocalList(status=status)

    @on("TriggerMessage")
    def trigger_message(self, **_: Any) -> Any:
        return v201.call_result.TriggerMessage(status="Accepted")

    @on("SetChargingProfile")
    def set_charging_profile(self, **_: Any) -> Any:
        return v201.call_result.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def clear_charging_profile(self, **_: Any) -> Any:
        return v201.call_result.ClearChargingProfile(status="Accepted")


@contextlib.asynccontextmanager
async def charger(daemon: Daemon, charger_id: str, held: Held, ocpp: str = "ocpp1.6"):
    """A charger connected and booted for the duration of the block."""
    kind = Charger16 if ocpp == "ocpp1.6" else Charger201
    async with websockets.connect(f"{daemon.ocpp_url}/{charger_id}", subprotocols=[ocpp], open_timeout=5) as ws:
        cp = kind(charger_id, ws, held)
        task = asyncio.create_task(cp.start(), name=f"charger-{charger_id}")
        try:
            await asyncio.wait_for(cp.boot(), timeout=10)
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


@pytest.fixture
def make_daemon(tmp_path, mosquitto):
    made: list[Daemon] = []

    def make() -> Daemon:
        ocpp_port, api_port = free_port(), free_port()
        text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port,
                           chargers=2, connectors=1, auth="local_list")
        d = Daemon(tmp_path / f"d{len(made)}", text, api_port=api_port, ocpp_port=ocpp_port)
        made.append(d)
        d.start()
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


async def put(d: Daemon, tag: str, status: str = "Accepted", **extra: Any) -> None:
    code, body = await d.aapi("PUT", "/api/tokens", {"tag": tag, "status": status, **extra})
    assert code == 200, body


async def delete(d: Daemon, tag: str) -> None:
    code, body = await d.aapi("DELETE", "/api/tokens", {"tag": tag})
    assert code == 200, body


async def events(d: Daemon, kind: str) -> list[dict]:
    return [e for e in (await d.aapi("GET", "/api/events?limit=10000"))[1] if e["kind"] == kind]


def assert_no_tags_leaked(d: Daemon, *tags: str) -> None:
    shown = d.log() + json.dumps(d.api("GET", "/api/events?limit=10000")[1]) + json.dumps(d.api("GET", "/api/tokens")[1])
    for tag in tags:
        assert tag not in shown, "a tag leaked into the log or the API"


async def test_an_ocpp16_charger_gets_the_list_on_connect_and_every_change_after(make_daemon) -> None:
    d = make_daemon()
    for tag, status in TAGS.items():
        await put(d, tag, status, **({"expiry": "2030-01-01T00:00:00Z", "group": "G1"} if tag == "04A1B2C3D4" else {}))
    held = Held(per_message=2)
    async with charger(d, "CP01", held) as cp:
        await wait_until(lambda: held.statuses() == TAGS, 10, "the whole list on the charger")
        assert cp.held.variables[("", "LocalAuthListEnabled")] == "true"
        # Three tags, two a message: a Full, then a Differential that ends at the gateway's version 4.
        assert [(kind, version, len(items)) for kind, version, items in held.sends] == [("Full", 3, 2), ("Differential", 4, 1)]
        assert held.entries["04A1B2C3D4"] == {"status": "Accepted", "expiry_date": "2030-01-01T00:00:00.000Z", "parent_id_tag": "G1"}

        await put(d, "04C0FFEE00", "Accepted")
        await wait_until(lambda: "04C0FFEE00" in held.entries, 5, "the new tag on the charger")
        assert held.sends[-1] == ("Differential", 5, [{"id_tag": "04C0FFEE00", "id_tag_info": {"status": "Accepted"}}])
        await put(d, "04E5F6A7B8", "Blocked")
        await wait_until(lambda: held.statuses().get("04E5F6A7B8") == "Blocked", 5, "the changed tag on the charger")
        await delete(d, "BLOCKED001")
        await wait_until(lambda: "BLOCKED001" not in held.entries, 5, "the removed tag gone from the charger")
        assert held.sends[-1] == ("Differential", 7, [{"id_tag": "BLOCKED001"}])
        assert len(held.sends) == 5 and held.version == 7
    sent = await events(d, "local_list_sent")
    assert [e["charger"] for e in sent] == ["CP01"] and sent[0]["data"]["version"] == 4
    assert_no_tags_leaked(d, *TAGS, "04C0FFEE00")


async def test_a_charger_back_from_offline_catches_up_and_an_old_version_gets_the_whole_list(make_daemon) -> None:
    d = make_daemon()
    await put(d, "04A1B2C3D4")
    await put(d, "04E5F6A7B8")
    held = Held()
    async with charger(d, "CP01", held):
        await wait_until(lambda: held.version == 3, 10, "the list on the charger")
    await put(d, "04C0FFEE00")  # while it is gone
    await delete(d, "04A1B2C3D4")
    async with charger(d, "CP01", held):
        await wait_until(lambda: held.version == 5, 10, "the charger caught up")
    # Both changes in one Differential on top of what it held.
    assert [(kind, version) for kind, version, _ in held.sends] == [("Full", 3), ("Differential", 5)]
    assert held.statuses() == {"04E5F6A7B8": "Accepted", "04C0FFEE00": "Accepted"}

    await put(d, "04D00D0000")  # version 6, then the gateway restarts and forgets how it got there
    d.stop()
    d.start()
    async with charger(d, "CP01", held):
        await wait_until(lambda: held.version == 6, 10, "the list on the charger after the gateway's restart")
    assert held.sends[-1][:2] == ("Full", 6)
    assert held.statuses() == {"04E5F6A7B8": "Accepted", "04C0FFEE00": "Accepted", "04D00D0000": "Accepted"}


async def test_an_ocpp201_station_gets_id_tokens_and_changes(make_daemon) -> None:
    d = make_daemon()
    await put(d, "04A1B2C3D4", group="G1")
    await put(d, "E0040150A1B2C3D4E5F6A7B8C9")  # 26 characters: too long for 1.6, fine for 2.0.1
    held = Held()
    async with charger(d, "CP02", held, "ocpp2.0.1"):
        await wait_until(lambda: held.version == 3, 10, "the list on the station")
        assert held.variables[("LocalAuthListCtrlr", "Enabled")] == "true"
        kind, version, items = held.sends[0]
        assert (kind, version) == ("Full", 3)
        by_tag = {i["id_token"]["id_token"]: i for i in items}
        assert by_tag["04A1B2C3D4"] == {
            "id_token": {"id_token": "04A1B2C3D4", "type": "ISO14443"},
            "id_token_info": {"status": "Accepted", "group_id_token": {"id_token": "G1", "type": "Central"}},
        }
        assert "E0040150A1B2C3D4E5F6A7B8C9" in by_tag
        await put(d, "04A1B2C3D4", "Blocked")
        await wait_until(lambda: held.statuses().get("04A1B2C3D4") == "Blocked", 5, "the change on the station")
        assert held.sends[-1][:2] == ("Differential", 4)
        await delete(d, "E0040150A1B2C3D4E5F6A7B8C9")
        await wait_until(lambda: held.version == 5, 5, "the removal on the station")
        assert held.sends[-1] == ("Differential", 5, [{"id_token": {"id_token": "E0040150A1B2C3D4E5F6A7B8C9", "type": "ISO14443"}}])
        assert held.statuses() == {"04A1B2C3D4": "Blocked"}


async def test_a_charger_without_a_local_list_is_noted_once_and_left_alone(make_daemon) -> None:
    d = make_daemon()
    await put(d, "04A1B2C3D4")
    held = Held(supports=False)
    async with charger(d, "CP01", held):
        await wait_until(lambda: events(d, "local_list_unsupported"), 10, "the event for the technician")
        await put(d, "04E5F6A7B8")
    async with charger(d, "CP01", held):
        await asyncio.sleep(2)  # time for the gateway to notice the connection and (not) act on it
    noted = await events(d, "local_list_unsupported")
    assert len(noted) == 1 and noted[0]["charger"] == "CP01" and "NotSupported" in noted[0]["message"]
    assert held.sends == []
    assert d.log().count("has none") == 1
    assert_no_tags_leaked(d, "04A1B2C3D4", "04E5F6A7B8")
