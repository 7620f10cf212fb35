"""Builds the grid meter a config's `[grid_meter]` section names: an SDM630 on Modbus TCP or a P1 port."""

from __future__ import annotations

from collections.abc import Callable

from config.schema_devices import GridMeterConfig
from drivers.contract.devices import GridMeter, GridReading
from drivers.meters.p1 import P1Meter
from drivers.meters.sdm630 import Sdm630Meter


def make_grid_meter(cfg: GridMeterConfig, on_reading: Callable[[GridReading], None]) -> GridMeter:
    """The driver for `cfg`, reporting to `on_reading`; raises ValueError for settings it cannot use."""
    if cfg.driver == "sdm630":
        if cfg.host is None:
            raise ValueError("grid meter driver \"sdm630\" needs host")
        return Sdm630Meter(
            cfg.host, cfg.tcp_port, cfg.unit_id, on_reading=on_reading, poll_s=cfg.poll_s, timeout_s=cfg.timeout_s
        )
    if cfg.driver == "p1":
        return P1Meter(
            host=cfg.host, port=cfg.port, serial_port=cfg.serial_port, baudrate=cfg.baudrate,
            dsmr_version=cfg.dsmr_version, on_reading=on_reading, timeout_s=cfg.timeout_s,
        )
    raise ValueError(f"unknown grid meter driver {cfg.driver!r}")
