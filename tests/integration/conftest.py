"""Integration fixtures: a real mosquitto per test."""

from tests.integration.mosquitto import mosquitto  # noqa: F401
