"""The admin HTTP API of interfaces.md §5: JSON for technicians, the console and test rigs.

Served with aiohttp behind `controller.api.guard` (token, Origin, Host, JSON only). Id tags only
ever travel in request bodies and are answered as hashes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from datetime import datetime, timedelta

from aiohttp import web

from controller.api.calls import ChargerCaller, ChargerCalls
from controller.api.guard import (
    AUTHORIZED,
    MAX_BODY_BYTES,
    BadRequest,
    Guard,
    allowed_hosts,
    error,
    json_response,
    plain_text,
    read_json,
)
from controller.api.listener import CappedListener
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
from drivers.contract.clock import local_text, parse_ts, wire_ts
from drivers.contract.text import printable
from drivers.contract.words import ACCEPTED, COLORS, TOKEN_STATUSES
from signage.rules import Override

log = logging.getLogger("laadplein.api")

MAX_OVERRIDE_MINUTES = 7 * 24 * 60


_json, _error = json_response, error


class AdminApi:
    """The HTTP server; `run()` serves until cancelled."""

    def __init__(
        self, state: SquareState, cycle: Cycle, ocpp: ChargerCaller, *, token: str,
        local_list: LocalListKeeper | None = None, tls: ssl.SSLContext | None = None,
    ) -> None:
        self.state = state
        self.cycle = cycle
        self.ocpp = ocpp
        self.settings = state.cfg.api
        self.tls = tls
        self.guard = Guard(token, allowed_hosts(self.settings.host, self.settings.port, self.settings.host_names))
        # Token changes go through the keeper: it numbers them and carries them to chargers (one
        # that is not running still numbers them, and chargers catch up when it runs).
        self.local_list = local_list if local_list is not None else LocalListKeeper(state, ocpp)
        self.lights = LightsTester(state)
        self.port: int | None = None
        self.app = web.Application(middlewares=[self.guard.middleware], client_max_size=MAX_BODY_BYTES)
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
        self.calls = ChargerCalls(state, ocpp, self._body, allow_risky=self.settings.allow_risky_calls)
        r.add_post("/api/chargers/{charger}/call/{action}", self.calls.handle)
        r.add_put("/api/chargers/{charger}/password", self.set_charger_password)
        r.add_put("/api/chargers/{charger}/message-limits", self.set_message_limits)
        r.add_get("/api/events", self.events)
        r.add_get("/api/sessions", self.sessions)
        r.add_get("/api/sessions/{session}/meter_values", self.session_meter_values)
        r.add_get("/api/tokens", self.tokens)
        r.add_put("/api/tokens", self.put_token)
        r.add_delete("/api/tokens", self.delete_token)

    async def run(self, host: str, port: int, ready: asyncio.Event | None = None) -> None:
        # keepalive_timeout also bounds the wait for a request's headers (aiohttp closes a connection
        # still waiting for a whole request when it runs out): a slow client is cut off after it.
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, keepalive_timeout=self.settings.request_timeout_s,
        )
        await runner.setup()
        try:
            listener = CappedListener(runner.server, self.settings.max_connections)
            server = await asyncio.get_running_loop().create_server(
                listener, host, port, ssl=self.tls, backlog=128,
                ssl_handshake_timeout=self.settings.request_timeout_s if self.tls else None,
            )
            async with server:
                self.port = server.sockets[0].getsockname()[1] if server.sockets else port
                # Allowed Host values follow the real port when the config asked for any (port 0 in tests).
                self.guard.hosts = allowed_hosts(host, self.port, self.settings.host_names)
                log.info("admin API on %s://%s:%s/api (bearer token in %s, at most %d connections)",
                         "https" if self.tls else "http", host, self.port, self.state.cfg.api_token_file,
                         self.settings.max_connections)
                if ready is not None:
                    ready.set()
                await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _body(self, request: web.Request) -> dict:
        data = await read_json(request, self.settings.request_timeout_s)
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        return data

    # ---- views -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.state.clock()

    async def health(self, request: web.Request) -> web.Response:
        if not request[AUTHORIZED]:
            return _json({"ok": True})  # alive, and nothing more without the token
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
        body = await self._body(request)
        color = body.get("color")
        if color not in COLORS:
            raise BadRequest(f"color must be one of {', '.join(COLORS)}, not {color!r}")
        minutes = body.get("minutes")
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or not 0 < minutes <= MAX_OVERRIDE_MINUTES:
            raise BadRequest(f"minutes must be a number above 0 and at most {MAX_OVERRIDE_MINUTES}, not {minutes!r}")
        who, why = plain_text(body.get("who"), "who", 80), plain_text(body.get("why"), "why", 200)
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
        who = plain_text(request.query.get("who"), "who", 80)
        existed = self.state.overrides.pop(bay_id, None)
        await self.state.store.clear_override(bay_id)
        if existed is None:
            return _error(404, f"bay {bay_id} has no override")
        self.state.note("override_cleared", f"bay {bay_id}: override cleared by {who or 'unknown'}", bay_id=bay_id)
        log.info("bay %s: override cleared", bay_id)
        return _json({"bay": bay_id, "cleared": True})

    async def lights_test(self, request: web.Request) -> web.Response:
        """Walk the lights through blue, green, off and back; answers when done (409 while one runs)."""
        body = await self._body(request) if request.body_exists else {}
        try:
            bays, hold_s, who = parse_request(body, [b.id for b in self.state.cfg.bays])
        except UnknownBay as exc:
            return _error(404, str(exc))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        who = plain_text(who, "who", 80)
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

    async def set_charger_password(self, request: web.Request) -> web.Response:
        """A new Basic Auth password for a charger of the config, stored hashed; it replaces the config's."""
        charger_id = request.match_info["charger"]
        if not any(c.id == charger_id for c in self.state.cfg.chargers):
            return _error(404, f"no charger {charger_id!r}")
        password = (await self._body(request)).get("password")
        exposed = not self.state.cfg.ocpp.on_loopback
        problem = password_problem(password, min_chars=min_password_chars(
            exposed=exposed, insecure=self.state.cfg.charger(charger_id).insecure))
        if problem is not None:
            raise BadRequest(problem)
        await change_password(self.state.store, self.state.passwords, charger_id, password, self._now())
        self.state.note("charger_password", f"charger {charger_id}: new Basic Auth password set through the API "
                        "(it counts from the charger's next connect)", charger_id=charger_id)
        return _json({"ok": True, "charger": charger_id})

    async def set_message_limits(self, request: web.Request) -> web.Response:
        """A charger's per-message limits, as the operator knows them (body `{"GetVariables": {"items": 4}}`):
        every request the gateway sends it keeps within these and what the charger's answers say."""
        charger_id = request.match_info["charger"]
        if not any(c.id == charger_id for c in self.state.cfg.chargers):
            return _error(404, f"no charger {charger_id!r}")
        body = await self._body(request)
        try:
            self.ocpp.tell_limits(charger_id, body)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        shown = ", ".join(f"{action} {limits}" for action, limits in sorted(body.items()))
        self.state.note("charger_message_limits", printable(f"charger {charger_id}: per-message limits set through the API: {shown}", 300),
                        charger_id=charger_id)
        return _json({"ok": True, "charger": charger_id, "limits": body})

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
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 5) or not 1 <= int(raw) <= 10000:
            raise BadRequest(f"limit must be 1-10000, not {raw!r}")
        return int(raw)

    async def events(self, request: web.Request) -> web.Response:
        after = request.query.get("after_id")
        if after is not None and not (after.isascii() and after.isdigit() and len(after) < 19):
            raise BadRequest("after_id must be an event id (a whole number)")
        return _json(await self.state.store.events(
            since=self._since(request), limit=self._limit(request), after_id=int(after) if after is not None else None,
        ))

    async def sessions(self, request: web.Request) -> web.Response:
        sessions = await self.state.store.sessions(since=self._since(request), limit=self._limit(request))
        # `id` is the transaction id the charger knows: an OCPP 2.0.1 charger's own string
        return _json([{k: v for k, v in s.items() if k != "charger_tx"} | {"id": s["charger_tx"] or s["id"]} for s in sessions])

    async def session_meter_values(self, request: web.Request) -> web.Response:
        """A session's stored samples, oldest first; `?charger=` picks one where two chargers' 2.0.1
        transaction ids are the same."""
        public_id = request.match_info["session"]
        charger_id = request.query.get("charger")
        if len(public_id) > 64 or (charger_id is not None and len(charger_id) > 64):
            raise BadRequest("a session id or charger id is at most 64 characters")
        found = await self.state.store.sessions_by_public_id(public_id, charger_id)
        if not found:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no session {public_id!r}"}), content_type="application/json")
        if len(found) > 1:
            chargers = ", ".join(sorted({s["charger"] for s in found}))
            raise web.HTTPConflict(
                text=json.dumps({"error": f"session id {public_id!r} is used by chargers {chargers}: add ?charger=<id>"}),
                content_type="application/json",
            )
        samples = await self.state.store.meter_samples(found[0]["id"])
        return _json([{k: v for k, v in m.items() if k != "tx_id"} for m in samples])

    async def tokens(self, request: web.Request) -> web.Response:
        return _json(await self.state.store.tokens.all())

    async def put_token(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        tag = body.get("tag")
        if not isinstance(tag, str) or not tag.strip() or len(tag) > 36:
            raise BadRequest("tag must be a non-empty string of at most 36 characters (OCPP 1.6 IdToken is 20)")
        plain_text(tag, "tag", 36)
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
        plain_text(group, "group", 36)
        tag_hash = await self.local_list.put(tag, status, expiry, group)
        self.state.note("token_set", f"local list: tag {tag_hash[:8]}… set to {status}", data={"tag_hash": tag_hash})
        return _json({"tag_hash": tag_hash, "status": status, "expiry": wire_ts(expiry) if expiry else None, "group": group})

    async def delete_token(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        tag = body.get("tag")
        if not isinstance(tag, str) or not tag.strip():
            raise BadRequest("tag must be a non-empty string")
        plain_text(tag, "tag", 36)
        tag_hash = self.state.store.hash_tag(tag)
        if not await self.local_list.remove(tag):
            return _error(404, f"tag {tag_hash[:8]}… is not in the local list")
        self.state.note("token_deleted", f"local list: tag {tag_hash[:8]}… removed", data={"tag_hash": tag_hash})
        return _json({"tag_hash": tag_hash, "deleted": True})
