from __future__ import annotations

import pytest

from edgevib.broker import MosquittoProcess, find_or_start, parse_url, reachable
from edgevib.errors import ConfigError, RetryableError


def test_parse_url() -> None:
    assert parse_url("mqtt://h:1884") == ("h", 1884, False)
    assert parse_url("mqtts://h") == ("h", 8883, True)
    assert parse_url("h") == ("h", 1883, False)
    with pytest.raises(ConfigError, match="scheme 'http'"):
        parse_url("http://h:1")


def test_private_mosquitto_stops_and_restarts_on_the_same_port(broker: MosquittoProcess) -> None:
    assert reachable("127.0.0.1", broker.port)
    broker.stop()
    assert not reachable("127.0.0.1", broker.port)
    broker.start()
    assert reachable("127.0.0.1", broker.port)


def test_find_or_start_uses_a_given_broker_and_refuses_a_dead_one(broker: MosquittoProcess) -> None:
    url, started = find_or_start(broker.url)
    assert url == broker.url and started is None
    broker.stop()
    with pytest.raises(RetryableError, match="no MQTT broker answers"):
        find_or_start(broker.url)


def test_embedded_broker_carries_messages_when_no_mosquitto_is_used() -> None:
    from edgevib.edge.mqtt import MqttLink

    from edgevib.broker import EmbeddedBroker

    b = EmbeddedBroker()
    b.start()
    try:
        rx = MqttLink(b.url, client_id="rx")
        tx = MqttLink(b.url, client_id="tx")
        assert rx.wait_connected(10) and tx.wait_connected(10)
        rx.subscribe("t/#")
        import time

        deadline = time.monotonic() + 10
        got = None
        while got is None and time.monotonic() < deadline:
            tx.publish("t/x", b"hello", qos=1)
            got = rx.poll(0.5)
        assert got is not None and got.payload == b"hello"
        rx.close()
        tx.close()
    finally:
        b.stop()
