"""The admin HTTP API of interfaces.md §5: JSON for technicians, the console and test rigs.

Served with aiohttp. Id tags only ever travel in request bodies and are answered as hashes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiohttp import web

from controller.shell.cycle import Cycle
from controller.shell.lights_test import (
    LightsTestBusy,
    LightsTester,
    UnknownBay,
    parse_request,
)
from controller.shell.local_list import LocalListKeeper
from controller.shell.state import SquareState
from controller.store.passwords import (
    change_password,
    min_password_chars,
    password_problem,
)
from drivers.contract.backend import (
    CallErrorReceived,
    CallTimedOut,
    ChargerNotConnected,
)
from drivers.contract.clock import local_text, parse_ts, wire_ts
from drivers.contract.words import ACCEPTED, COLORS, TOKEN_STATUSES
from signage.rules import Override

log = logging.getLogger("laadplein.api")

MAX_OVERRIDE_MINUTES = 7 * 24 * 60


class ChargerCaller(Protocol):
    """What the API needs of the OCPP driver."""

    def connected(self) -> dict[str, str]: ...

    async def call(self, charger_id: str, action: str, payload: dict) -> dict: ...


class BadRequest(Exception):
    """The request's body or parameters are wrong; the message says how."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status=status)


async def _body(request: web.Request) -> dict:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


class AdminApi:
    """The HTTP server; `run()` serves until cancelled."""

    def __init__(
        self, state: SquareState, cycle: Cycle, ocpp: ChargerCaller, *, token: str | None,
        local_list: LocalListKeeper | None = None,
    ) -> None:
        self.state = state
        self.cycle = cycle
        self.ocpp = ocpp
        self.token = token
        # Token changes go through the keeper: it numbers them and carries them to chargers (one
        # that is not running still numbers them, and chargers catch up when it runs).
        self.local_list = local_list if local_list is not None else LocalListKeeper(state, ocpp)
        self.lights = LightsTester(state)
        self.port: int | None = None
        self.app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        r = self.app.router
        r.add_get("/api/health", self.health)
        r.add_get("/api/status", self.status)
        r.add_get("/api/bays", self.bays)
        r.add_get("/api/bays/{bay}/history", self.bay_history)
        r.add_put("/api/bays/{bay}/override", self.set_override)
        r.add_delete("/api/bays/{bay}/override", self.clear_override)
        r.add_post("/api/lights/test", self.lights_test)
        r.add_get("/api/lights/test", self.lights_test_progress)
        r.add_get("/api/alarms", self.alarms)
        r.add_get("/api/chargers", self.chargers)
        r.add_post("/api/chargers/{charger}/call/{action}", self.call_charger)
        r.add_put("/api/chargers/{charger}/password", self.set_charger_password)
        r.add_get("/api/events", self.events)
        r.add_get("/api/sessions", self.sessions)
        r.add_get("/api/tokens", self.tokens)
        r.add_put("/api/tokens", self.put_token)
        r.add_delete("/api/tokens", self.delete_token)

    async def run(self, host: str, port: int, ready: asyncio.Event | None = None) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            self.port = runner.addresses[0][1] if runner.addresses else port
            log.info("admin API on http://%s:%s/api", host, self.port)
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return _error(401, "missing or wrong bearer token")
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc))

    # ---- views -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.state.clock()

    async def health(self, request: web.Request) -> web.Response:
        st = self.state
        online = sorted(c for c, live in st.chargers.items() if live.online)
        return _json(
            {
                "ok": True,
                "storage": "ok",
                "broker": "connected" if st.broker_online else "disconnected",
                "battery": None if st.cfg.battery is None else "not implemented",
                "chargers_online": len(online),
                "chargers": len(st.cfg.chargers),
                "cycles": self.cycle.cycles,
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        return _json(self.cycle.snapshot(self._now()))

    async def bays(self, request: web.Request) -> web.Response:
        now = self._now()
        snap = self.cycle.snapshot(now)["bays"]
        for bay in snap:
            o = self.state.overrides.get(bay["id"])
            cmd = self.state.commands.get(bay["id"])
            bay["seq"] = cmd["seq"] if cmd else None
            bay["override"] = (
                {"color": o.color, "until": wire_ts(o.until), "who": o.who, "why": o.why} if o and o.until > now else None
            )
            ack = self.state.acks.get(bay["id"])
            bay["fixture"] = {"seq": ack[0], "color": ack[1], "at": wire_ts(ack[2])} if ack else None
        return _json(snap)

    def _bay_id(self, request: web.Request) -> str:
        bay_id = request.match_info["bay"]
        try:
            self.state.cfg.bay(bay_id)
        except KeyError:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no bay {bay_id!r}"}), content_type="application/json")
        return bay_id

    async def bay_history(self, request: web.Request) -> web.Response:
        bay_id = self._bay_id(request)
        since = self._since(request)
        rows = await self.state.store.events(since=since, kind="light", bay_id=bay_id, limit=self._limit(request))
        return _json(rows)

    async def set_override(self, request: web.Request) -> web.Response:
        bay_id = self._bay_id(request)
        body = await _body(request)
        color = body.get("color")
        if color not in COLORS:
            raise BadRequest(f"color must be one of {', '.join(COLORS)}, not {color!r}")
        minutes = body.get("minutes")
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or not 0 < minutes <= MAX_OVERRIDE_MINUTES:
            raise BadRequest(f"minutes must be a number above 0 and at most {MAX_OVERRIDE_MINUTES}, not {minutes!r}")
        who, why = str(body.get("who") or "")[:80], str(body.get("why") or "")[:200]
        now = self._now()
        until = now + timedelta(minutes=minutes)
        await self.state.store.set_override(bay_id, color, until, who, why, now)
        self.state.overrides[bay_id] = Override(color=color, until=until, who=who, why=why)
        self.state.note(
            "override_set",
            f"bay {bay_id}: override {color} until {local_text(until, self.state.cfg.site.timezone)} by {who or 'unknown'}: {why or 'no reason given'}",
            at=now,
            bay_id=bay_id,
            data={"color": color, "until": wire_ts(until), "who": who, "why": why},
        )
        log.info("bay %s: override %s for %g min by %s: %s", bay_id, color, minutes, who or "unknown", why or "-")
        return _json({"bay": bay_id, "color": color, "until": wire_ts(until), "who": who, "why": why})

    async def clear_override(self, request: web.Request) -> web.Response:
        bay_id = self._bay_id(request)
        existed = self.state.overrides.pop(bay_id, None)
        await self.state.store.clear_override(bay_id)
        if existed is None:
            return _error(404, f"bay {bay_id} has no override")
        who = request.query.get("who", "")
        self.state.note("override_cleared", f"bay {bay_id}: override cleared by {who or 'unknown'}", bay_id=bay_id)
        log.info("bay %s: override cleared", bay_id)
        return _json({"bay": bay_id, "cleared": True})

    async def lights_test(self, request: web.Request) -> web.Response:
        """Walk the lights through blue, green, off and back; answers when done (409 while one runs)."""
        body = await _body(request) if request.body_exists else {}
        try:
            bays, hold_s, who = parse_request(body, [b.id for b in self.state.cfg.bays])
        except UnknownBay as exc:
            return _error(404, str(exc))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        try:
            return _json(await self.lights.run(bays, hold_s=hold_s, who=who))
        except LightsTestBusy as exc:
            return _error(409, str(exc), progress=exc.progress)

    async def lights_test_progress(self, request: web.Request) -> web.Response:
        progress = self.lights.progress()
        return _json(progress) if progress is not None else _error(404, "no lights test since the daemon started")

    async def alarms(self, request: web.Request) -> web.Response:
        return _json(await self.state.store.active_alarms())

    async def chargers(self, request: web.Request) -> web.Response:
        st = self.state
        out = []
        for c in st.cfg.chargers:
            live = st.chargers[c.id]
            connectors = []
            for n, conn in sorted(live.connectors.items()):
                bay = st.cfg.bay_for(c.id, n)
                connectors.append(
                    {
                        "connector": n,
                        "bay": bay.id if bay else None,
                        "status": conn.status,
                        "error_code": conn.error_code,
                        "transaction_id": conn.transaction_id,
                        "current_a": list(conn.current_a),
                        "power_w": conn.power_w,
                        "energy_wh": conn.energy_wh,
                        **self._limits(c.id, n),
                    }
                )
            out.append(
                {
                    "id": c.id,
                    "online": live.online,
                    "ocpp": live.ocpp_version,
                    "connected_at": wire_ts(live.connected_at) if live.connected_at else None,
                    "disconnected_at": wire_ts(live.disconnected_at) if live.disconnected_at else None,
                    "last_heard": wire_ts(live.last_heard) if live.last_heard else None,
                    "vendor": live.vendor,
                    "model": live.model,
                    "firmware": live.firmware,
                    "max_current_a": c.max_current_a,
                    "phases": c.phases,
                    "profiles": self.cycle.power.charging.mode(c.id) if self.cycle.power is not None else None,
                    "connectors": connectors,
                }
            )
        return _json(out)

    def _limits(self, charger_id: str, connector: int) -> dict:
        power = self.cycle.power
        if power is None:
            return {"limit_a": None}
        return power.connector_view(charger_id, connector)

    async def call_charger(self, request: web.Request) -> web.Response:
        charger_id = request.match_info["charger"]
        action = request.match_info["action"]
        if charger_id not in self.state.chargers:
            return _error(404, f"no charger {charger_id!r}")
        payload = await _body(request)
        try:
            answer = await self.ocpp.call(charger_id, action, payload)
        except ChargerNotConnected:
            return _error(409, f"charger {charger_id} is not connected")
        except CallTimedOut:
            return _error(504, f"charger {charger_id} did not answer {action} in time")
        except CallErrorReceived as exc:
            return _error(502, f"charger {charger_id} answered {action} with a CALLERROR", code=exc.code, description=exc.description)
        except ValueError as exc:  # the request does not fit the OCPP schema
            return _error(400, f"{action}: {exc}")
        log.info("charger %s: %s sent by the admin API", charger_id, action)
        return _json(answer)

    async def set_charger_password(self, request: web.Request) -> web.Response:
        """A new Basic Auth password for a charger of the config, stored hashed; it replaces the config's."""
        charger_id = request.match_info["charger"]
        if not any(c.id == charger_id for c in self.state.cfg.chargers):
            return _error(404, f"no charger {charger_id!r}")
        password = (await _body(request)).get("password")
        exposed = not self.state.cfg.ocpp.on_loopback
        problem = password_problem(password, min_chars=min_password_chars(
            exposed=exposed, insecure=self.state.cfg.charger(charger_id).insecure))
        if problem is not None:
            raise BadRequest(problem)
        await change_password(self.state.store, self.state.passwords, charger_id, password, self._now())
        self.state.note("charger_password", f"charger {charger_id}: new Basic Auth password set through the API "
                        "(it counts from the charger's next connect)", charger_id=charger_id)
        return _json({"ok": True, "charger": charger_id})

    def _since(self, request: web.Request) -> datetime | None:
        raw = request.query.get("since")
        if not raw:
            return None
        try:
            return parse_ts(raw)
        except ValueError:
            raise BadRequest(f"since must be a time like 2026-11-28T13:05:09Z, not {raw!r}") from None

    def _limit(self, request: web.Request) -> int:
        raw = request.query.get("limit", "500")
        if not raw.isdigit() or not 1 <= int(raw) <= 10000:
            raise BadRequest(f"limit must be 1-10000, not {raw!r}")
        return int(raw)

    async def events(self, request: web.Request) -> web.Response:
        after = request.query.get("after_id")
        if after is not None and not (after.isdigit() and len(after) < 19):
            raise BadRequest("after_id must be an event id (a whole number)")
        return _json(await self.state.store.events(
            since=self._since(request), limit=self._limit(request), after_id=int(after) if after is not None else None,
        ))

    async def sessions(self, request: web.Request) -> web.Response:
        sessions = await self.state.store.sessions(since=self._since(request), limit=self._limit(request))
        # `id` is the transaction id the charger knows: an OCPP 2.0.1 charger's own string
        return _json([{k: v for k, v in s.items() if k != "charger_tx"} | {"id": s["charger_tx"] or s["id"]} for s in sessions])

    async def tokens(self, request: web.Request) -> web.Response:
        return _json(await self.state.store.tokens.all())

    async def put_token(self, request: web.Request) -> web.Response:
        body = await _body(request)
        tag = body.get("tag")
        if not isinstance(tag, str) or not tag.strip() or len(tag) > 36:
            raise BadRequest("tag must be a non-empty string of at most 36 characters (OCPP 1.6 IdToken is 20)")
        status = body.get("status", ACCEPTED)
        if status not in TOKEN_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(TOKEN_STATUSES)}, not {status!r}")
        expiry = None
        if body.get("expiry") is not None:
            try:
                expiry = parse_ts(str(body["expiry"]))
            except ValueError:
                raise BadRequest(f"expiry must be a time like 2027-01-01T00:00:00Z, not {body['expiry']!r}") from None
        group = body.get("group")
        if group is not None and (not isinstance(group, str) or len(group) > 36):
            raise BadRequest("group must be a string of at most 36 characters")
        tag_hash = await self.local_list.put(tag, status, expiry, group)
        self.state.note("token_set", f"local list: tag {tag_hash[:8]}… set to {status}", data={"tag_hash": tag_hash})
        return _json({"tag_hash": tag_hash, "status": status, "expiry": wire_ts(expiry) if expiry else None, "group": group})

    async def delete_token(self, request: web.Request) -> web.Response:
        body = await _body(request)
        tag = body.get("tag")
        if not isinstance(tag, str) or not tag.strip():
            raise BadRequest("tag must be a non-empty string")
        tag_hash = self.state.store.hash_tag(tag)
        if not await self.local_list.remove(tag):
            return _error(404, f"tag {tag_hash[:8]}… is not in the local list")
        self.state.note("token_deleted", f"local list: tag {tag_hash[:8]}… removed", data={"tag_hash": tag_hash})
        return _json({"tag_hash": tag_hash, "deleted": True})
