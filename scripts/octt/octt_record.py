"""A pytest plugin loaded into the tzi-OCTT suite's own Python (`-p octt_record`): for every test it
writes one JSON line to $OCTT_RECORD with its outcome, its error's line and the last WebSocket frame
each way. The suite's stations send through their own `_send`, past the `ocpp` library's log, so the
frames are taken at the suite's websockets client (its legacy protocol, websockets 13), or from the
library's log where that client is not there. It imports nothing of the gateway."""

from __future__ import annotations

import json
import logging
import os

import pytest

_RECEIVED, _SENT = ": receive message ", ": send "


class _Frames(logging.Handler):
    """The frames the suite's stations log through the `ocpp` logger, newest last."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.from_gateway: list[str] = []
        self.from_station: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if _RECEIVED in text:
            self.from_gateway.append(text.split(_RECEIVED, 1)[1])
        elif _SENT in text:
            self.from_station.append(text.split(_SENT, 1)[1])


_frames = _Frames()


def _watch_websockets() -> bool:
    """Record every frame the suite's websockets client sends and receives; False without that client."""
    try:
        from websockets.legacy.protocol import WebSocketCommonProtocol
    except ImportError:
        return False
    send, recv = WebSocketCommonProtocol.send, WebSocketCommonProtocol.recv

    async def recording_send(self, message, *args, **kwargs):
        _frames.from_station.append(str(message))
        return await send(self, message, *args, **kwargs)

    async def recording_recv(self, *args, **kwargs):
        message = await recv(self, *args, **kwargs)
        _frames.from_gateway.append(str(message))
        return message

    WebSocketCommonProtocol.send, WebSocketCommonProtocol.recv = recording_send, recording_recv
    return True


def pytest_configure(config: pytest.Config) -> None:
    if not _watch_websockets():
        logger = logging.getLogger("ocpp")
        logger.setLevel(logging.INFO)
        logger.addHandler(_frames)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _frames.from_gateway.clear()
    _frames.from_station.clear()


def _line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0] if crash.message else ""
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    failed_setup = report.when == "setup" and not report.passed
    if report.when != "call" and not failed_setup:
        return
    result = report.outcome if report.when == "call" else ("skipped" if report.skipped else "error")
    with open(os.environ["OCTT_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps({
            "item": item.name,
            "outcome": result,
            "message": "" if report.passed else _line(report),
            "last_from_gateway": _frames.from_gateway[-1] if _frames.from_gateway else "",
            "last_from_station": _frames.from_station[-1] if _frames.from_station else "",
        }) + "\n")
