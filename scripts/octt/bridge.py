"""The suite's "CSMS trigger server", played by the operator: each trigger becomes the admin API
requests an operator would make (plan.bridge), and what the gateway did not do is noted for the case
that is running."""

from __future__ import annotations

import json
import secrets
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from controller.cli.client import ApiClient, ClientError
from scripts.octt.plan import ApiRequest, bridge

_PASSWORD_CHARS = string.ascii_letters + string.digits
_PASSWORD_LENGTH = 24  # OCPP 2.0.1 BasicAuthPassword: 16 to 40 characters


def new_password() -> str:
    return "".join(secrets.choice(_PASSWORD_CHARS) for _ in range(_PASSWORD_LENGTH))


class AdminApi:
    """The gateway's admin API on loopback, with its bearer token (the console's client)."""

    def __init__(self, port: int, token: str, timeout_s: float = 30.0) -> None:
        self.client = ApiClient(f"http://127.0.0.1:{port}", token, timeout_s=timeout_s)

    def send(self, req: ApiRequest) -> tuple[int, object]:
        """(HTTP status, JSON answer); status 0 when the daemon did not answer."""
        try:
            return 200, self.client.request(req.method, req.path, req.body)
        except ClientError as exc:
            return exc.status or 0, exc.body if exc.body is not None else str(exc)


class Notes:
    """What the bridge could not do, per case (set `case` before running one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.case = ""
        self.by_case: dict[str, list[str]] = {}

    def add(self, text: str) -> None:
        with self._lock:
            self.by_case.setdefault(self.case, []).append(text)

    def take(self, case: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(self.by_case.pop(case, []))


class Bridge(ThreadingHTTPServer):
    """The trigger server on 127.0.0.1: `with Bridge(api, notes) as b:` serves on `b.port` in a thread."""

    daemon_threads = True

    def __init__(self, api: AdminApi, notes: Notes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        self.notes = notes
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, name="octt-bridge", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Bridge

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._answer(400, {"error": "the body must be a JSON object"})
            return
        plan = bridge(self.path, body, new_password())
        if plan.refusal is not None:
            self.server.notes.add(f"POST {self.path}: no counterpart ({plan.refusal})")
            self._answer(501, {"error": plan.refusal})
            return
        status, answer = 0, None
        for index, req in enumerate(plan.requests):
            status, answer = self.server.api.send(req)
            if status != 200:
                self.server.notes.add(f"POST {self.path} -> {req.method} {req.path}: {status} {json.dumps(answer)}")
                for undo in plan.undo if index > 0 else ():
                    undone, _ = self.server.api.send(undo)
                    self.server.notes.add(f"  undone: {undo.method} {undo.path} -> {undone}")
                break
        # As the suite's own CSMS does: a trigger is answered 200 whatever the charger said, so the
        # case itself judges what reached the station.
        self._answer(200, answer if status == 200 else {"result": "error", "status": status, "detail": answer})
