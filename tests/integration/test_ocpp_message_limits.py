"""The central system keeps its requests within a charger's per-message limits, over real sockets: a raw
OCPP 1.6 client with GetConfigurationMaxKeys 2 keeps every GetConfiguration it receives. With its own
calls on, the gateway reads the limit before its first GetConfiguration of several keys; with them
off, it reads nothing and learns the limit from an answer that passes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from drivers.contract.backend import InvalidRequest
from drivers.ocpp.server import OcppServer
from tests.integration.test_ocpp_server import FakeBackend, client, eventually, square

CONFIG = {"GetConfigurationMaxKeys": "2", "A": "1", "B": "2", "C": "3"}


class Keys:
    """A charge point that answers every CALL of the gateway and keeps the GetConfiguration key lists."""

    def __init__(self, ws: ClientConnection, config: dict[str, str]) -> None:
        self.ws, self.config = ws, config
        self.asked: list[list[str] | None] = []

    async def serve(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message[0] != 2:
                continue
            action, payload = message[2], message[3]
            answer: dict[str, Any] = {"status": "Accepted"}
            if action == "GetConfiguration":
                keys = payload.get("key")
                self.asked.append(keys)
                wanted = sorted(self.config) if keys is None else keys
                answer = {"configurationKey": [{"key": k, "readonly": True, "value": self.config[k]} for k in wanted if k in self.config]}
                if unknown := [k for k in wanted if k not in self.config]:
                    answer["unknownKey"] = unknown
            await self.ws.send(json.dumps([3, message[1], answer]))


@contextlib.asynccontextmanager
async def charge_point(server: OcppServer, config: dict[str, str]) -> AsyncIterator[Keys]:
    async with client(server) as ws:
        keys = Keys(ws, config)
        task = asyncio.create_task(keys.serve(), name="keys")
        try:
            await eventually(lambda: "CP01" in server.connected())
            yield keys
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_limit_is_read_once_before_the_first_request_it_could_split() -> None:
    async with square(FakeBackend({"CP01": None})) as (server, _), charge_point(server, CONFIG) as cp:
        answer = await server.call("CP01", "GetConfiguration", {"key": ["A", "B", "Nope", "C", "D"]})
        assert cp.asked == [["GetConfigurationMaxKeys"], ["A", "B"], ["Nope", "C"], ["D"]]
        assert [k["key"] for k in answer["configurationKey"]] == ["A", "B", "C"] and answer["unknownKey"] == ["Nope", "D"]
        await server.call("CP01", "GetConfiguration", {"key": ["C", "B", "A"]})
        await server.call("CP01", "GetConfiguration", {})  # every key: nothing to split
        assert cp.asked[4:] == [["C", "B"], ["A"], None]


async def test_without_own_calls_nothing_is_read_and_the_limit_is_learned_from_an_answer() -> None:
    async with square(FakeBackend({"CP01": None}), own_calls=False) as (server, _), charge_point(server, CONFIG) as cp:
        await server.call("CP01", "GetConfiguration", {"key": ["A", "B", "C"]})
        await server.call("CP01", "GetConfiguration", {"key": ["GetConfigurationMaxKeys"]})  # as an operator might
        await server.call("CP01", "GetConfiguration", {"key": ["A", "B", "C"]})
        assert cp.asked == [["A", "B", "C"], ["GetConfigurationMaxKeys"], ["A", "B"], ["C"]]


@pytest.mark.parametrize("value", ["-1", "0", "abc", "99999999999999999999", ""])
async def test_a_nonsense_limit_leaves_requests_as_they_are(value: str) -> None:
    async with square(FakeBackend({"CP01": None})) as (server, _), \
            charge_point(server, {**CONFIG, "GetConfigurationMaxKeys": value}) as cp:
        for _ in range(2):
            await server.call("CP01", "GetConfiguration", {"key": ["A", "B", "C"]})
        assert cp.asked == [["GetConfigurationMaxKeys"], ["A", "B", "C"], ["A", "B", "C"]]


async def test_a_request_outside_the_schema_is_still_refused_before_anything_is_sent() -> None:
    async with square(FakeBackend({"CP01": None})) as (server, _), charge_point(server, CONFIG) as cp:
        with pytest.raises(InvalidRequest):
            await server.call("CP01", "GetConfiguration", {"key": ["A", 7]})
        assert cp.asked == []


async def test_limits_the_operator_gives_hold_without_a_read_and_the_lower_one_wins() -> None:
    async with square(FakeBackend({"CP01": None}), own_calls=False) as (server, _), charge_point(server, CONFIG) as cp:
        server.tell_limits("CP01", {"GetConfiguration": {"items": 1}})
        await server.call("CP01", "GetConfiguration", {"key": ["A", "B"]})
        assert cp.asked == [["A"], ["B"]]  # nothing read: the operator's word
        server.tell_limits("CP01", {"GetConfiguration": {"items": 3}})
        await server.call("CP01", "GetConfiguration", {"key": ["GetConfigurationMaxKeys"]})  # the charger says 2
        await server.call("CP01", "GetConfiguration", {"key": ["A", "B", "C"]})
        assert cp.asked[3:] == [["A", "B"], ["C"]]
        for junk in ({"GetConfiguration": {"items": 0}}, {"Reset": {"items": 2}}, {"GetConfiguration": {"pages": 2}},
                     {"GetVariables": {"bytes": 10}}, {"GetVariables": {"items": True}}, {"GetVariables": 3}):
            with pytest.raises(ValueError):
                server.tell_limits("CP01", junk)
