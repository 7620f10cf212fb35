"""Device drivers: OCPP central system, MQTT, Modbus, and the simulated devices of the other side."""
