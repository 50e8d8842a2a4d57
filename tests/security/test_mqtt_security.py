"""MQTT security on a real Mosquitto running the shipped deploy/mosquitto config.

Negative checks never just sleep: a forbidden message is followed by an allowed marker from
the same client, and Mosquitto keeps one client's messages in order, so once the marker has
arrived the forbidden message would have arrived before it.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as paho
import pytest
from edgevib.edge.mqtt import MqttLink, Tls

from edgevib.protocol import Topics, subscription
from tests.security.conftest import PASSWORDS, SecureBroker

pytestmark = pytest.mark.integration

A, B = Topics("plant1", "gw-a"), Topics("plant1", "gw-b")
TIMEOUT = 10.0


@contextmanager
def link(url: str, *, user: str | None = None, tls: Tls | None = None,
         subscribe: tuple[str, ...] = (), password: str | None = None) -> Iterator[MqttLink]:
    m = MqttLink(url, f"sec-{user or 'anon'}-{time.monotonic_ns() % 10**9}", username=user,
                 password=password if password is not None else (PASSWORDS.get(user or "") if user else None),
                 tls=tls, connect=False, reconnect=(1, 2))
    for f in subscribe:
        m.subscribe(f)
    m.start()
    try:
        assert m.wait_connected(TIMEOUT), f"{user} could not connect to {url}"
        yield m
    finally:
        m.close()


def receive_until(m: MqttLink, marker_topic: str, timeout: float = TIMEOUT) -> list[tuple[str, bytes]]:
    """Every message up to and including the first one on ``marker_topic``."""
    got: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = m.poll(0.1)
        if msg is None:
            continue
        got.append((msg.topic, msg.payload))
        if msg.topic == marker_topic:
            return got
    raise AssertionError(f"marker on {marker_topic} never arrived; got {got}")


def publish_acked(m: MqttLink, topic: str, payload: bytes) -> None:
    """QoS 1 publish that waits for the broker's PUBACK (sent for denied messages too, MQTT 3.1.1)."""
    mid = m.publish(topic, payload, qos=1)
    assert mid is not None
    deadline = time.monotonic() + TIMEOUT
    acked: list[int] = []
    while mid not in acked:
        assert time.monotonic() < deadline, f"no PUBACK for {topic}"
        acked += m.acked()
        time.sleep(0.01)


def connack(url_host: str, port: int, *, user: str | None, password: str | None,
            tls: Tls | None) -> tuple[bool, Any]:
    """Connect with plain paho; (connected, CONNACK reason code or the exception)."""
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result["rc"] = rc
        done.set()

    def on_disconnect(_c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result.setdefault("rc", rc)
        done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sec-raw-{time.monotonic_ns() % 10**9}")
    if user is not None:
        c.username_pw_set(user, password)
    if tls is not None:
        c.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key)
    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    try:
        c.connect(url_host, port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:  # TLS handshake refused before any MQTT
        return False, exc
    c.loop_start()
    try:
        assert done.wait(TIMEOUT), "no CONNACK and no disconnect"
    finally:
        c.loop_stop()
        c.disconnect()
    rc = result["rc"]
    return (not rc.is_failure), rc


# -- password listener (8883): TLS + password + ACL --------------------------------------------

def test_gateway_over_tls_publishes_under_its_prefix(secure_broker: SecureBroker) -> None:
    ca = Tls(ca=str(secure_broker.pki.ca))
    with link(secure_broker.url("tls"), user="cloud", tls=ca, subscribe=("edgevib/v1/#",)) as cloud, \
            link(secure_broker.url("tls"), user="gw-a", tls=ca) as gw:
        publish_acked(gw, A.heartbeat, b'{"hb": 1}')
        got = receive_until(cloud, A.heartbeat)
    assert got == [(A.heartbeat, b'{"hb": 1}')]


def test_gateway_publishes_its_own_indicators_only(secure_broker: SecureBroker) -> None:
    # the agent publishes condition indicators on .../indicators (QoS 0): the shipped ACL lets
    # a gateway write its own, not another's
    ca = Tls(ca=str(secure_broker.pki.ca))
    with link(secure_broker.url("tls"), user="cloud", tls=ca, subscribe=("edgevib/v1/#",)) as cloud, \
            link(secure_broker.url("tls"), user="gw-a", tls=ca) as gw:
        publish_acked(gw, B.indicators, b"forged")
        publish_acked(gw, A.indicators, b'{"ind": 1}')
        got = receive_until(cloud, A.indicators)
    assert got == [(A.indicators, b'{"ind": 1}')]


def test_gateway_cannot_publish_as_another_gateway(secure_broker: SecureBroker) -> None:
    ca = Tls(ca=str(secure_broker.pki.ca))
    with link(secure_broker.url("tls"), user="cloud", tls=ca, subscribe=("edgevib/v1/#",)) as cloud, \
            link(secure_broker.url("tls"), user="gw-a", tls=ca) as gw:
        for forged in (B.alerts, B.heartbeat, B.status, B.raw("de"), A.models, A.cmd,
                       "edgevib/v1/plant1/gw-a-evil/alerts", "edgevib/v1/fleet/events"):
            publish_acked(gw, forged, b"forged")
        publish_acked(gw, A.alerts, b"marker")
        got = receive_until(cloud, A.alerts)
    assert got == [(A.alerts, b"marker")], f"forged messages were delivered: {got}"


def test_gateway_cannot_read_another_gateways_models(secure_broker: SecureBroker) -> None:
    ca, url = Tls(ca=str(secure_broker.pki.ca)), secure_broker.url("tls")
    with link(url, user="gw-a", tls=ca, subscribe=(B.models, subscription("models"), "edgevib/v1/#", A.models)) as gw_a, \
            link(url, user="gw-b", tls=ca, subscribe=(B.models,)) as gw_b, \
            link(url, user="cloud", tls=ca) as cloud:
        publish_acked(cloud, B.models, b"model for b")
        publish_acked(cloud, A.models, b"model for a")
        got_a = receive_until(gw_a, A.models)
        got_b = receive_until(gw_b, B.models)
    assert got_b == [(B.models, b"model for b")]  # the message was real and reached its gateway
    # gw-a subscribed four ways (three of them cover B.models) yet sees only its own
    assert all(topic == A.models for topic, _ in got_a), got_a
    assert (A.models, b"model for a") in got_a


@pytest.mark.parametrize("user,password", [("gw-a", "wrong"), ("gw-a", PASSWORDS["gw-b"]),
                                           ("nobody", "x"), (None, None)])
def test_bad_credentials_refused(secure_broker: SecureBroker, user: str | None, password: str | None) -> None:
    ok, rc = connack("127.0.0.1", secure_broker.tls, user=user, password=password,
                     tls=Tls(ca=str(secure_broker.pki.ca)))
    assert not ok
    assert str(rc) in ("Not authorized", "Bad user name or password"), rc


def test_plaintext_client_cannot_talk_to_tls_listener(secure_broker: SecureBroker) -> None:
    # MqttLink: mqtt:// to the TLS port never connects
    m = MqttLink(secure_broker.url("tls", "mqtt"), "sec-plain", username="gw-a", password=PASSWORDS["gw-a"],
                 reconnect=(1, 1))
    try:
        assert not m.wait_connected(3.0)
    finally:
        m.close()
    # the bytes on the wire: a plaintext CONNECT gets no CONNACK (0x20), only a TLS alert or a close
    user, pw = b"gw-a", PASSWORDS["gw-a"].encode()
    var = b"\x00\x04MQTT\x04\xc2\x00\x3c"
    body = var + struct.pack("!H", 5) + b"plain" + struct.pack("!H", len(user)) + user + struct.pack("!H", len(pw)) + pw
    with socket.create_connection(("127.0.0.1", secure_broker.tls), timeout=5) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        try:
            reply = s.recv(64)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"\x20"), reply


def test_client_refuses_a_broker_signed_by_another_ca(secure_broker: SecureBroker) -> None:
    ok, rc = connack("127.0.0.1", secure_broker.tls, user="gw-a", password=PASSWORDS["gw-a"],
                     tls=Tls(ca=str(secure_broker.pki.rogue_ca)))
    assert not ok
    assert isinstance(rc, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(rc), rc


# -- mutual-TLS listener (8884): client certificate CN is the user name ------------------------

def _cert(secure_broker: SecureBroker, name: str, rogue: bool = False) -> Tls:
    cert, key = (secure_broker.pki.rogue_clients if rogue else secure_broker.pki.clients)[name]
    return Tls(ca=str(secure_broker.pki.ca), cert=str(cert), key=str(key))


def test_mtls_gateway_confined_to_its_prefix(secure_broker: SecureBroker) -> None:
    ca = Tls(ca=str(secure_broker.pki.ca))
    with link(secure_broker.url("tls"), user="cloud", tls=ca, subscribe=("edgevib/v1/#",)) as cloud, \
            link(secure_broker.url("mtls"), tls=_cert(secure_broker, "gw-a")) as gw:
        publish_acked(gw, B.alerts, b"forged")
        publish_acked(gw, A.alerts, b"cert marker")
        got = receive_until(cloud, A.alerts)
    assert got == [(A.alerts, b"cert marker")]


@pytest.mark.parametrize("who", ["no certificate", "certificate from another CA"])
def test_mtls_refuses_clients_without_a_valid_certificate(secure_broker: SecureBroker, who: str) -> None:
    tls = Tls(ca=str(secure_broker.pki.ca)) if who == "no certificate" else _cert(secure_broker, "gw-a", rogue=True)
    ok, rc = connack("127.0.0.1", secure_broker.mtls, user="gw-a", password=PASSWORDS["gw-a"], tls=tls)
    assert not ok, rc


# -- internal listener (1883): anonymous cloud job, limited by acl.internal --------------------

def test_internal_anonymous_client_reads_all_but_cannot_forge_alerts(secure_broker: SecureBroker) -> None:
    ca = Tls(ca=str(secure_broker.pki.ca))
    with link(secure_broker.url("internal", "mqtt"), subscribe=("edgevib/v1/#",)) as internal, \
            link(secure_broker.url("tls"), user="gw-a", tls=ca) as gw:
        publish_acked(internal, A.alerts, b"forged by anonymous")
        publish_acked(internal, A.models, b"model from cloud")
        got = receive_until(internal, A.models)
        publish_acked(gw, A.heartbeat, b"from gw-a")
        got += receive_until(internal, A.heartbeat)
    assert got == [(A.models, b"model from cloud"), (A.heartbeat, b"from gw-a")]
