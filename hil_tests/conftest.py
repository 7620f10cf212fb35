"""Scenario fixtures: a rig (simulator by default, or `--hardware FILE`) and a report table per scenario."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hil_tests.rig import HardwareRig, Report, SimRig, Unsupported
from tests.integration.mosquitto import MOSQUITTO_BIN

_REPORTS: list[Report] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hardware",
        default=os.environ.get("LAADPLEIN_HIL_HARDWARE"),
        help="TOML file describing real equipment (see hil_tests/hardware.example.toml); default: the simulator",
    )


@pytest.fixture
async def rig(request: pytest.FixtureRequest, tmp_path: Path):
    hardware = request.config.getoption("--hardware")
    if hardware:
        made = HardwareRig(tmp_path, Path(hardware))
    else:
        if not Path(MOSQUITTO_BIN).exists():
            pytest.fail(f"mosquitto is not installed at {MOSQUITTO_BIN}: apt-get install -y mosquitto")
        made = SimRig(tmp_path)
    async with made as r:
        yield r


@pytest.fixture
def report(request: pytest.FixtureRequest, rig) -> Report:
    r = Report(request.node.name, rig.name)
    _REPORTS.append(r)
    return r


async def skip_unless(coro) -> None:
    """Run a rig action; a rig that cannot do it skips the scenario with the reason."""
    try:
        await coro
    except Unsupported as exc:
        pytest.skip(str(exc))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _REPORTS:
        return
    terminalreporter.section("what the scenarios saw")
    for r in _REPORTS:
        terminalreporter.write_line(r.table())
        terminalreporter.write_line("")
