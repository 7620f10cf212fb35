"""The real daemon (`laadplein run`) against real mosquitto and simulated chargers over real WebSockets."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
import websockets

from tests.integration.harness import (
    MqttWatcher,
    chargers,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = "lp/testplein"


async def test_bay_blue_while_charging_and_green_grace_after(make_daemon, mosquitto):
    d = make_daemon(signage={"grace_s": 3})
    d.start()
    async with MqttWatcher(mosquitto.port, ROOT) as mq, chargers(d, "CP01", "CP02") as sims:
        # Bay known once its connector status arrives: an empty bay without reserve is green/open.
        await mq.wait_light("B01", "green", reason="open")
        t0 = time.monotonic()
        await sims["CP01"].plug_in(1)
        await mq.wait_light("B01", "blue", after=t0, timeout_s=5)
        await mq.wait_light("B01", "blue", reason="charging", after=t0, timeout_s=5)
        t_stop = time.monotonic()
        await sims["CP01"].stop(1)
        await mq.wait_light("B01", "blue", reason="finished", after=t_stop, timeout_s=5)
        green = await mq.wait_light("B01", "green", reason="finished", after=t_stop, timeout_s=10)
        waited = green.at - t_stop
        assert 2.5 <= waited <= 8, f"green {waited:.1f} s after the session ended, grace_s is 3"
        # Every command carries text and a pictogram, and seq only ever increases.
        seqs = [c["seq"] for c in mq.lights("B01")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for c in mq.lights("B01"):
            assert c["text"] and c["pictogram"] in ("charging", "parking") and c["ts"].endswith("Z")
        status, sessions = await d.aapi("GET", "/api/sessions")
        assert status == 200 and len(sessions) == 1 and sessions[0]["stopped"] and sessions[0]["bay"] == "B01"
        assert "SIM-TAG" not in json.dumps(sessions)


async def test_reserve_follows_empty_sensor_bays_and_occupied_green_never_turns_blue(make_daemon, mosquitto):
    d = make_daemon(signage={"min_free_ev_bays": 1, "min_dwell_s": 0})
    d.start()
    async with MqttWatcher(mosquitto.port, ROOT) as mq, chargers(d, "CP01", "CP02"):
        # No sensor reading yet: every bay counts as occupied, so nothing is reserved.
        for bay in ("B01", "B02", "B03", "B04"):
            await mq.wait_light(bay, "green", reason="open")
        # A car (not electric) parks in B02: occupied, and it must stay green whatever happens.
        await mq.publish("bays/B02/occupancy", json.dumps({"occupied": True}), retain=True)
        for bay in ("B01", "B03", "B04"):
            await mq.publish(f"bays/{bay}/occupancy", json.dumps({"occupied": False}), retain=True)
        first = await mq.wait_for(
            lambda s: s.topic.endswith("/light") and s.json()["reason"] == "reserved", 10, "a reserved bay"
        )
        reserved = first.topic.split("/")[-2]
        assert reserved in ("B01", "B03", "B04")
        # The reserve bay fills up (sensor occupied): another empty bay takes over the reserve.
        t1 = time.monotonic()
        await mq.publish(f"bays/{reserved}/occupancy", json.dumps({"occupied": True}), retain=True)
        await mq.wait_light(reserved, "green", after=t1)
        other = await mq.wait_for(
            lambda s: s.at >= t1 and s.topic.endswith("/light") and s.json()["reason"] == "reserved", 10, "a new reserve"
        )
        assert other.topic.split("/")[-2] not in (reserved, "B02")
        await asyncio.sleep(1.0)
        assert all(c["color"] == "green" for c in mq.lights("B02")), mq.lights("B02")


async def test_unknown_charger_and_wrong_password_are_refused(make_daemon):
    d = make_daemon(password="s3cret-pass")
    d.start()
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(f"{d.ocpp_url}/CP99", subprotocols=["ocpp1.6"], open_timeout=5):
            pass
    assert refused.value.response.status_code == 404
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(f"{d.ocpp_url}/CP01", subprotocols=["ocpp1.6"], open_timeout=5):
            pass
    assert refused.value.response.status_code == 401
    url = d.ocpp_url.replace("ws://", "ws://CP01:s3cret-pass@")
    async with websockets.connect(f"{url}/CP01", subprotocols=["ocpp1.6"], open_timeout=5) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_malformed_frames_get_callerrors_and_the_connection_still_works(make_daemon):
    d = make_daemon()
    d.start()
    async with chargers(d, "CP01") as sims:
        sim = sims["CP01"]
        answer = json.loads(await sim.send_raw('[2, "m1", "BootNotification", {"chargePointVendor": 5}]'))
        assert answer[0] == 4 and answer[1] == "m1" and answer[2] in ("FormationViolation", "TypeConstraintViolation")
        answer = json.loads(await sim.send_raw('[2, "m2", "NoSuchAction", {}]'))
        assert answer[:3] == [4, "m2", "NotImplemented"]
        answer = json.loads(await sim.send_raw('[2, "m3", "Heartbeat"]'))
        assert answer[:3] == [4, "m3", "FormationViolation"]
        assert await sim.send_raw("this is not json") is None
        assert await sim.send_raw("[" * 5000 + "]" * 5000) is None
        tx = await sim.plug_in(1)
        assert isinstance(tx, int) and tx > 0
    status, sessions = await d.aapi("GET", "/api/sessions")
    assert [s["id"] for s in sessions] == [tx]


async def test_transaction_survives_sigkill_right_after_the_answer(make_daemon):
    d = make_daemon()
    d.start()
    async with chargers(d, "CP01") as sims:
        tx = await sims["CP01"].plug_in(2)
        d.kill()  # no chance to flush anything after the answer
    d.start()
    status, sessions = await d.aapi("GET", "/api/sessions")
    assert status == 200
    mine = [s for s in sessions if s["id"] == tx]
    assert mine and mine[0]["charger"] == "CP01" and mine[0]["connector"] == 2 and mine[0]["stopped"] is None


async def test_seq_survives_restart_and_gateway_status_and_will(make_daemon, mosquitto):
    d = make_daemon()
    d.start()
    async with MqttWatcher(mosquitto.port, ROOT) as mq:
        await mq.wait_for(lambda s: s.topic == f"{ROOT}/gateway/status" and s.payload == b"online", 10, "online")
        async with chargers(d, "CP01") as sims:
            await mq.wait_light("B01", "green")
            await sims["CP01"].plug_in(1)
            blue = await mq.wait_light("B01", "blue", reason="charging")
            seq_before = blue.json()["seq"]
            t_kill = time.monotonic()
            d.kill()
            await mq.wait_for(
                lambda s: s.at >= t_kill and s.topic == f"{ROOT}/gateway/status" and s.payload == b"offline",
                10, "the Last Will",
            )
            await asyncio.to_thread(d.start)
            await mq.wait_for(
                lambda s: s.at >= t_kill and s.topic == f"{ROOT}/gateway/status" and s.payload == b"online", 10, "online again"
            )
            await wait_until(lambda: sims["CP01"].connected, 10, "the charger reconnected")
            await sims["CP01"].stop(1)
            after = await mq.wait_light("B01", "blue", reason="finished", after=t_kill, timeout_s=15)
            assert after.json()["seq"] > seq_before
        t_term = time.monotonic()
        assert d.stop() == 0
        await mq.wait_for(
            lambda s: s.at >= t_term and s.topic == f"{ROOT}/gateway/status" and s.payload == b"offline", 5, "clean offline"
        )


async def test_admin_api_override_call_and_token(make_daemon, mosquitto):
    d = make_daemon(token="t0ken-for-the-tests")
    d.start()
    assert (await d.aapi("GET", "/api/status", token="wrong"))[0] == 401
    async with MqttWatcher(mosquitto.port, ROOT) as mq, chargers(d, "CP01") as sims:
        await mq.wait_light("B01", "green")
        status, body = await d.aapi("PUT", "/api/bays/B01/override", {"color": "blue", "minutes": 5, "who": "tech", "why": "test"})
        assert status == 200, body
        await mq.wait_light("B01", "blue", reason="override")
        assert (await d.aapi("PUT", "/api/bays/B01/override", {"color": "purple", "minutes": 5}))[0] == 400
        assert (await d.aapi("PUT", "/api/bays/B99/override", {"color": "blue", "minutes": 5}))[0] == 404
        assert (await d.aapi("DELETE", "/api/bays/B01/override"))[0] == 200
        await mq.wait_light("B01", "green", reason="open")
        status, answer = await d.aapi("POST", "/api/chargers/CP01/call/GetConfiguration", {})
        assert status == 200 and ("configurationKey" in answer or "unknownKey" in answer)
        assert (await d.aapi("POST", "/api/chargers/CP99/call/Reset", {"type": "Soft"}))[0] == 404
        assert (await d.aapi("POST", "/api/chargers/CP02/call/Reset", {"type": "Soft"}))[0] == 409
        status, snap = await d.aapi("GET", "/api/status")
        assert status == 200 and snap["site"] == "testplein" and len(snap["bays"]) == 4
        chargers_ = (await d.aapi("GET", "/api/chargers"))[1]
        assert chargers_[0]["online"] and chargers_[0]["ocpp"] == "ocpp1.6"
        kinds = {e["kind"] for e in (await d.aapi("GET", "/api/events?limit=1000"))[1]}
        assert {"charger_connected", "light", "override_set"} <= kinds
        state = await mq.wait_for(lambda s: s.topic == f"{ROOT}/state", 5, "the state snapshot")
        assert state.json()["site"] == "testplein"
        assert sims["CP01"].connected


async def test_junk_on_mqtt_is_survived(make_daemon, mosquitto):
    d = make_daemon(signage={"min_free_ev_bays": 1})
    d.start()
    async with MqttWatcher(mosquitto.port, ROOT) as mq, chargers(d, "CP01"):
        await mq.wait_light("B01", "green")
        for junk in (b"\xff\xfe", b"{", b'{"occupied": "yes"}', b"[]" * 3000, b"null"):
            await mq.publish("bays/B01/occupancy", junk)
            await mq.publish("bays/B01/light/ack", junk)
        await mq.publish("bays/B01/occupancy", json.dumps({"occupied": False}), retain=True)
        await mq.wait_light("B01", "blue", reason="reserved")
        assert (await d.aapi("GET", "/api/health"))[0] == 200


async def test_local_list_accepts_only_listed_tags_and_keeps_them_hashed(make_daemon):
    from drivers.sim.charger16 import SimChargerError

    d = make_daemon(auth="local_list")
    d.start()
    status, body = await d.aapi("PUT", "/api/tokens", {"tag": "04A1B2C3D4", "status": "Accepted"})
    assert status == 200 and "04A1B2C3D4" not in json.dumps(body)
    assert (await d.aapi("PUT", "/api/tokens", {"tag": "BLOCKED01", "status": "Blocked"}))[0] == 200
    assert (await d.aapi("PUT", "/api/tokens", {"tag": "X", "status": "Maybe"}))[0] == 400
    async with chargers(d, "CP01") as sims:
        tx = await sims["CP01"].plug_in(1, id_tag="04A1B2C3D4")
        assert tx > 0
        for tag, word in (("BLOCKED01", "Blocked"), ("UNKNOWN99", "Invalid")):
            with pytest.raises(SimChargerError, match=word):
                await sims["CP01"].plug_in(2, id_tag=tag)
            await sims["CP01"].unplug(2)
    listed = (await d.aapi("GET", "/api/tokens"))[1]
    assert len(listed) == 2 and all(set(t) >= {"tag_hash", "status"} for t in listed)
    everything = json.dumps(listed) + d.log() + json.dumps((await d.aapi("GET", "/api/events?limit=10000"))[1])
    for tag in ("04A1B2C3D4", "BLOCKED01", "UNKNOWN99"):
        assert tag not in everything, f"{tag} leaked into the API or the log"
    raw = b"".join(p.read_bytes() for p in (d.folder / "state").glob("laadplein.db*"))
    assert b"04A1B2C3D4" not in raw and b"UNKNOWN99" not in raw


async def test_files_the_daemon_makes_are_private_whatever_umask_it_inherits(make_daemon):
    """The database, its WAL and the gateway secret hold sessions and the key to every tag hash:
    a permissive umask in the starting shell (0022 is common) must not make them readable to others."""
    d = make_daemon()
    before = os.umask(0o022)  # the child inherits it
    try:
        d.start()
    finally:
        os.umask(before)
    async with chargers(d, "CP01") as sims:
        await sims["CP01"].plug_in(1)  # a session: the WAL has been written
    made = sorted(p for p in (d.folder / "state").iterdir())
    assert {"laadplein.db", "laadplein.db-wal", "laadplein.secret"} <= {p.name for p in made}
    open_to_others = {p.name: oct(p.stat().st_mode & 0o777) for p in made if p.stat().st_mode & 0o077}
    assert not open_to_others
