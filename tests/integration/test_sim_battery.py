"""The simulated SunSpec battery and SDM630 meter, read by independent Modbus clients over TCP."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from battery.model import BatteryModel
from battery.sunspec_map import decode_point, encode_point
from drivers.sim.battery import SimBattery
from drivers.sim.sdm630 import (
    CURRENT_A,
    FREQUENCY_HZ,
    POWER_FACTOR,
    POWER_W,
    TOTAL_POWER_W,
    SimGridMeter,
)

pytestmark = pytest.mark.integration

UNIT = 1
MAX_DISCHARGE_W = 18_000.0
MAX_CHARGE_W = 12_000.0


@asynccontextmanager
async def serving(device) -> AsyncIterator:
    ready = asyncio.Event()
    task = asyncio.create_task(device.run(ready), name="sim-under-test")
    try:
        async with asyncio.timeout(5):
            await ready.wait()
        yield device
    finally:
        task.cancel()
        async with asyncio.timeout(5):
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def modbus_client(port: int, timeout_s: float = 1.0) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=timeout_s, retries=0)
    async with asyncio.timeout(5):
        assert await client.connect()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def sim() -> AsyncIterator[SimBattery]:
    model = BatteryModel(capacity_wh=500.0, max_charge_w=MAX_CHARGE_W, max_discharge_w=MAX_DISCHARGE_W, soc_pct=60.0)
    async with serving(SimBattery(port=0, unit_id=UNIT, model=model, serial="SIM-42", step_s=0.1)) as battery:
        yield battery


async def read_point(client: AsyncModbusTcpClient, sim: SimBattery, model_id: int, name: str, sf_name: str | None):
    point = sim.layout.point(model_id, name)
    rr = await client.read_holding_registers(point.address, count=point.size, device_id=UNIT)
    assert not rr.isError(), rr
    sf = None
    if sf_name is not None:
        sf_point = sim.layout.point(model_id, sf_name)
        rs = await client.read_holding_registers(sf_point.address, count=1, device_id=UNIT)
        sf = decode_point(rs.registers, "sunssf")
    return decode_point(rr.registers, point.type, sf)


async def write_point(client: AsyncModbusTcpClient, sim: SimBattery, name: str, value: float, sf: int | None = None):
    point = sim.layout.point(124, name)
    rr = await client.write_registers(point.address, encode_point(value, point.type, sf), device_id=UNIT)
    assert not rr.isError(), rr


async def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {timeout_s} s") from None


def scan_with_pysunspec2(port: int) -> dict:
    device = SunSpecModbusClientDeviceTCP(slave_id=UNIT, ipaddr="127.0.0.1", ipport=port, timeout=2)
    try:
        device.scan()
        common, battery, storage = device.models[1][0], device.models[802][0], device.models[124][0]
        return {
            "models": sorted(k for k in device.models if isinstance(k, int)),
            "Mn": common.Mn.value,
            "Md": common.Md.value,
            "SN": common.SN.value,
            "SoC": battery.SoC.cvalue,
            "W": battery.W.cvalue,
            "WHRtg": battery.WHRtg.cvalue,
            "WDisChaRteMax": battery.WDisChaRteMax.cvalue,
            "State": battery.State.value,
            "WChaMax": storage.WChaMax.cvalue,
            "ChaState": storage.ChaState.cvalue,
            "StorCtl_Mod": storage.StorCtl_Mod.value,
        }
    finally:
        device.disconnect()


async def test_pysunspec2_scans_the_simulated_battery(sim):
    found = await asyncio.wait_for(asyncio.to_thread(scan_with_pysunspec2, sim.port), 10)
    assert found["models"] == [1, 124, 802]
    assert (found["Mn"], found["Md"], found["SN"]) == ("laadplein", "SimBattery", "SIM-42")
    assert found["SoC"] == pytest.approx(60.0, abs=0.1)
    assert found["ChaState"] == pytest.approx(60.0, abs=0.1)
    assert found["W"] == 0
    assert found["WHRtg"] == pytest.approx(500)
    assert found["WDisChaRteMax"] == pytest.approx(MAX_DISCHARGE_W)
    assert found["WChaMax"] == pytest.approx(MAX_CHARGE_W)
    assert found["State"] == 4  # standby
    assert found["StorCtl_Mod"] == 0


async def test_discharge_command_moves_power_and_soc(sim):
    async with modbus_client(sim.port) as client:
        soc_before = await read_point(client, sim, 802, "SoC", "SoC_SF")
        await write_point(client, sim, "OutWRte", 50.0, sf=-2)
        await write_point(client, sim, "StorCtl_Mod", 0b10)

        async def discharging():
            return await read_point(client, sim, 802, "W", "W_SF") == pytest.approx(9_000, abs=10)

        await wait_for(discharging, 2.0, "W following the discharge command")
        assert await read_point(client, sim, 802, "ChaSt", None) == 3  # discharging
        await asyncio.sleep(0.5)  # 9 kW for 0.5 s takes about 0.26 % of 500 Wh

        async def soc_falls():
            return await read_point(client, sim, 802, "SoC", "SoC_SF") < soc_before - 0.1

        await wait_for(soc_falls, 2.0, "SoC falling")

        await write_point(client, sim, "InWRte", 25.0, sf=-2)
        await write_point(client, sim, "StorCtl_Mod", 0b01)

        async def charging():
            return await read_point(client, sim, 802, "W", "W_SF") == pytest.approx(-3_000, abs=10)

        await wait_for(charging, 2.0, "W following the charge command")


async def test_revert_timeout_returns_the_battery_to_idle(sim):
    async with modbus_client(sim.port) as client:
        await write_point(client, sim, "InOutWRte_RvrtTms", 1)
        await write_point(client, sim, "OutWRte", 20.0, sf=-2)
        await write_point(client, sim, "StorCtl_Mod", 0b10)
        started = asyncio.get_running_loop().time()

        async def discharging():
            return await read_point(client, sim, 802, "W", "W_SF") > 0

        await wait_for(discharging, 1.0, "discharge")

        async def idle():
            return await read_point(client, sim, 802, "W", "W_SF") == 0

        await wait_for(idle, 3.0, "revert to idle")
        assert asyncio.get_running_loop().time() - started >= 0.9
        assert await read_point(client, sim, 124, "StorCtl_Mod", None) == 0
        assert sim.model.reverted


async def test_writes_outside_the_control_points_are_refused(sim):
    async with modbus_client(sim.port) as client:
        soc = sim.layout.point(802, "SoC")
        rr = await client.write_register(soc.address, 100, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 2
        out = sim.layout.point(124, "OutWRte")
        rr = await client.write_register(out.address, encode_point(150.0, "int16", -2)[0], device_id=UNIT)
        assert rr.isError() and rr.exception_code == 3  # beyond 100 %
        rr = await client.write_register(sim.layout.point(124, "StorCtl_Mod").address, 2, device_id=UNIT)
        assert not rr.isError()
        assert sim.model.setpoint_w == 0  # the refused rate was not kept


async def test_fault_silent_keeps_the_connection_but_never_answers(sim):
    sim.set_fault("silent")
    async with modbus_client(sim.port, timeout_s=0.3) as client:
        with pytest.raises(ModbusException):
            await asyncio.wait_for(client.read_holding_registers(40000, count=2, device_id=UNIT), 3)
    sim.set_fault("none")
    async with modbus_client(sim.port) as client:
        rr = await client.read_holding_registers(40000, count=2, device_id=UNIT)
        assert rr.registers == [0x5375, 0x6E53]


async def test_fault_exception_answers_device_failure(sim):
    sim.set_fault("exception")
    async with modbus_client(sim.port) as client:
        rr = await client.read_holding_registers(40000, count=2, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 4
        rr = await client.write_register(sim.layout.point(124, "StorCtl_Mod").address, 2, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 4


async def test_fault_garbage_reports_implausible_values(sim):
    sim.set_fault("garbage")
    async with modbus_client(sim.port) as client:
        soc = sim.layout.point(802, "SoC")
        rr = await client.read_holding_registers(soc.address, count=1, device_id=UNIT)
        assert rr.registers == [0xFFFF]
        assert await read_point(client, sim, 802, "SoC", "SoC_SF") is None
        assert await read_point(client, sim, 124, "ChaState", "ChaState_SF") == pytest.approx(250.0)
        assert await read_point(client, sim, 802, "W", "W_SF") > MAX_DISCHARGE_W
    sim.set_fault("none")
    async with modbus_client(sim.port) as client:
        assert await read_point(client, sim, 802, "SoC", "SoC_SF") == pytest.approx(60.0, abs=0.1)


async def test_grid_meter_reports_the_draw_as_sdm630_floats():
    draw = {"a": (10.0, -5.0, 16.0)}
    meter = SimGridMeter(lambda: draw["a"], port=0, unit_id=UNIT, refresh_s=0.05)
    async with serving(meter), modbus_client(meter.port) as client:

        async def floats(address: int, n: int) -> list[float]:
            rr = await client.read_input_registers(address, count=2 * n, device_id=UNIT)
            assert not rr.isError(), rr
            return [
                client.convert_from_registers(rr.registers[i : i + 2], client.DATATYPE.FLOAT32)
                for i in range(0, 2 * n, 2)
            ]

        assert await floats(0x0000, 3) == pytest.approx([230.0] * 3)
        assert await floats(CURRENT_A[0], 3) == pytest.approx([10.0, 5.0, 16.0])
        assert await floats(POWER_W[0], 3) == pytest.approx([2_300.0, -1_150.0, 3_680.0])
        assert await floats(POWER_FACTOR[0], 3) == pytest.approx([1.0, -1.0, 1.0])
        assert await floats(TOTAL_POWER_W, 1) == pytest.approx([4_830.0])
        assert await floats(FREQUENCY_HZ, 1) == pytest.approx([50.0])

        draw["a"] = (1.0, 2.0, 3.0)

        async def follows():
            return await floats(CURRENT_A[0], 3) == pytest.approx([1.0, 2.0, 3.0])

        await wait_for(follows, 1.0, "the meter following the draw")
        import_kwh = (await floats(0x0048, 1))[0]
        assert import_kwh > 0
        rr = await client.read_holding_registers(0x0000, count=2, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 1
