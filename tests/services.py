"""External servers the tests need (PostgreSQL, Redis, NATS, RabbitMQ, Mosquitto), found by one rule.

With `CI=true` a test that needs a server must find it, and fails if it cannot. Elsewhere (a developer's
laptop) a missing server skips the test with the reason. `TEST_<NAME>_URL` points at another server.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

import pytest

from receiver.registry import redact

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    """The PostgreSQL server for tests (`TEST_POSTGRES_URL`), or skip/fail the test without one."""
    return service_url("PostgreSQL", "TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL, default_port=5432)


def redis_url() -> str:
    """The Redis server for tests (`TEST_REDIS_URL`, a database number at most, no query)."""
    return service_url("Redis", "TEST_REDIS_URL", "redis://127.0.0.1:6379/0", default_port=6379)


def nats_url() -> str:
    """The NATS server, with JetStream enabled, for tests (`TEST_NATS_URL`)."""
    return service_url("NATS", "TEST_NATS_URL", "nats://127.0.0.1:4222", default_port=4222)


def amqp_url() -> str:
    """The RabbitMQ server for tests (`TEST_AMQP_URL`)."""
    return service_url("RabbitMQ", "TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", default_port=5672)


def mqtt_url() -> str:
    """The MQTT broker (Mosquitto) for tests (`TEST_MQTT_URL`)."""
    return service_url("Mosquitto", "TEST_MQTT_URL", "mqtt://127.0.0.1:1883", default_port=1883)


def service_url(name: str, variable: str, default: str, *, default_port: int) -> str:
    """`$variable` or `default`, once something listens at its host and port; else skip, or fail in CI."""
    url = os.environ.get(variable) or default
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    problem = _unreachable(host, port)
    if problem is None:
        return url
    reason = f"{name} is not reachable at {redact(url)} ({problem}); start it or set {variable}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _unreachable(host: str, port: int) -> str | None:
    """Why nothing answers TCP at host:port, or None. Probed once per process."""
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__
