"""cloud/ingest/fastmqtt.py: the cheaper receive path decodes what paho decodes.

The decoder against paho's own on hand-made PUBLISH packets (properties of every length
class, malformed ones); the client against a real Mosquitto with messages smaller and
larger than one socket read, QoS 0 and 1, with and without properties, across a reconnect.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from edgevib.cloud.ingest import fastmqtt
from edgevib.cloud.ingest.fastmqtt import READ_CHUNK, client_class, decode_publish_v5, make_client

from edgevib.broker import MosquittoProcess

mqtt = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


def _props(**values: Any) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def _packet(topic: bytes, qos: int, mid: int, payload: bytes, props: Properties | None) -> tuple[int, bytes]:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    body += props.pack() if props is not None else b"\x00"
    return 0x30 | qos << 1 | 0x01, body + payload  # retain set: the flags must come through too


CASES = [
    (b"edgevib/v1/p1/gw/alerts", 0, 0, b"{}", None),
    (b"edgevib/v1/p1/gw/alerts", 1, 65535, b"", None),
    (b"a", 1, 1, bytes(range(256)) * 300, _props(ContentType="application/json")),
    (b"t/\xc3\xa9", 1, 7, b"x", _props(UserProperty=[("k", "v" * 200)])),  # property length: 2 bytes
    (b"t", 0, 0, b"y" * 5, _props(UserProperty=[("k", "v" * 20000)])),  # 3 bytes
    (b"t", 1, 9, b"z", _props(SubscriptionIdentifier=[300], MessageExpiryInterval=5)),
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_decode_matches_paho(case: tuple[bytes, int, int, bytes, Properties | None]) -> None:
    topic, qos, mid, payload, props = case
    header, packet = _packet(topic, qos, mid, payload, props)
    assert decode_publish_v5(header, packet) == (topic, mid, qos, payload)
    paho_packet = pytest.importorskip("paho.mqtt._packet")  # paho >= 2.2 has a decoder of its own
    theirs = paho_packet.decode_publish(header, packet, mqtt.MQTTv5)
    assert (theirs.topic, theirs.mid, theirs.qos, theirs.payload) == (topic, mid, qos, payload)


@pytest.mark.parametrize("packet, why", [
    (b"\x00", "shorter than its topic length"),
    (b"\x00\x01a", "without its packet id"),
    (b"\x00\x01a\x00\x01", "without its property length"),
    (b"\x00\x01a\x00\x01\x05ab", "longer than the packet"),
    (b"\x00\x01a\x00\x01\xff\xff\xff\xff\x01", "longer than 4 bytes"),
])
def test_malformed_packets_are_refused(packet: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_publish_v5(0x32, packet)


def test_qos2_is_left_to_paho() -> None:
    with pytest.raises(ValueError, match="QoS 2"):
        decode_publish_v5(0x34, b"\x00\x01a\x00\x01\x00")


def test_without_pahos_hooks_the_plain_client_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastmqtt, "_client_class", None)
    monkeypatch.delattr(mqtt.Client, "_sock_recv")
    assert client_class() is mqtt.Client
    monkeypatch.setattr(fastmqtt, "_client_class", None)  # the next caller builds the fast one again


class _FakeSock:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def close(self) -> None:
        pass

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


def test_a_new_socket_starts_with_an_empty_buffer() -> None:
    c = make_client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    c._sock = _FakeSock(b"abcdef")
    assert c._sock_recv(1) == b"a" and c.buffered() == 5
    assert c._sock_recv(2) == b"bc" and c._sock_recv(10) == b"def" and c.buffered() == 0
    c._sock = _FakeSock(b"ghi")
    assert c._sock_recv(1) == b"g" and c.buffered() == 2
    c._sock = _FakeSock(b"xyz")  # a reconnect with bytes of the old connection still buffered
    assert c._sock_recv(2) == b"xy", "nothing of the old connection is served"
    c._sock = None
    assert c.buffered() == 0


def _varint(n: int) -> bytes:
    out = b""
    while True:
        n, byte = n >> 7, n & 0x7F
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


class _ChunkedSock:
    """A stream of bytes served in chunks of random size (a TCP stream), then 'would block'."""

    def __init__(self, data: bytes, seed: int) -> None:
        self.data, self.pos, self.rng = data, 0, random.Random(seed)

    def left(self) -> int:
        return len(self.data) - self.pos

    def close(self) -> None:
        pass

    def recv(self, n: int) -> bytes:
        if not self.left():
            raise BlockingIOError
        k = min(n, self.left(), self.rng.choice([1, 2, 3, 7, 100, 600, 5000, 70_000]))
        self.pos += k
        return self.data[self.pos - k:self.pos]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_packets_split_anywhere_in_the_stream_are_read_whole(seed: int) -> None:
    """Whole packets in the buffer go straight to paho's handler; split ones through paho's reads."""
    rng = random.Random(seed)
    sent, stream = [], b""
    for i in range(400):
        topic, qos, payload = f"t/{i}".encode(), i % 2, bytes([i % 256]) * rng.choice([0, 1, 50, 500, 20_000, 100_000])
        header, body = _packet(topic, qos, i + 1, payload, _props(UserProperty=[("i", "x" * 300)]) if i % 5 == 0 else None)
        stream += bytes([header]) + _varint(len(body)) + body
        sent.append((topic.decode(), qos, payload))
    got: list[tuple[str, int, bytes]] = []
    c = make_client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5,
                    manual_ack=True)
    c.on_message = lambda _c, _u, m: got.append((m.topic, m.qos, bytes(m.payload)))
    c._sock = _ChunkedSock(stream, seed)
    for _ in range(100_000):
        if not c._sock.left() and not c.buffered():
            break
        assert c.loop_read() == 0
    assert got == sent


def test_a_received_message_has_every_field_paho_sets() -> None:
    header, body = _packet(b"t/x", 1, 42, b"payload", _props(ContentType="x"))
    got: list[Any] = []
    c = make_client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5,
                    manual_ack=True)
    c.on_message = lambda _c, _u, m: got.append(m)
    c._sock = _ChunkedSock(bytes([header | 0x08]) + _varint(len(body)) + body, 0)  # dup set too
    assert c.loop_read() == 0 and len(got) == 1
    m = got[0]
    assert type(m) is mqtt.MQTTMessage
    assert all(hasattr(m, slot) for slot in mqtt.MQTTMessage.__slots__), "no slot left unset"
    assert (m.topic, m.mid, m.qos, m.payload, m.dup, m.retain, m.properties) == ("t/x", 42, 1, b"payload", True, True, None)
    assert m.timestamp > 0 and m == mqtt.MQTTMessage(mid=42)  # paho's equality: by mid


def test_per_topic_callbacks_and_errors_in_on_message_behave_as_in_paho() -> None:
    stream = b""
    for topic in (b"t/a", b"t/b", b"t/a"):
        header, body = _packet(topic, 0, 0, b"p", None)
        stream += bytes([header]) + _varint(len(body)) + body
    got: list[str] = []
    c = make_client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append("any " + m.topic)
    c.message_callback_add("t/b", lambda _c, _u, m: got.append("b " + m.topic))
    c._sock = _ChunkedSock(stream, 0)
    while c._sock.left() or c.buffered():
        assert c.loop_read() == 0
    assert got == ["any t/a", "b t/b", "any t/a"]

    def boom(*_a: object) -> None:
        raise RuntimeError("callback failed")

    header, body = _packet(b"t/c", 0, 0, b"p", None)
    c2 = make_client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="t2", protocol=mqtt.MQTTv5)
    c2.on_message = boom
    c2._sock = _ChunkedSock(bytes([header]) + _varint(len(body)) + body, 0)
    with pytest.raises(RuntimeError, match="callback failed"):  # paho's default: not suppressed
        c2.loop_read()


SIZES = [0, 1, 127, 128, 16383, 16384, READ_CHUNK - 10, READ_CHUNK + 10, 200_000]


@pytest.mark.integration
def test_receives_what_was_published_across_reads_and_a_reconnect(broker: MosquittoProcess) -> None:
    got: list[tuple[str, int, bytes]] = []
    lock = threading.Lock()
    sub = make_client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="fast-sub",
                      protocol=mqtt.MQTTv5, manual_ack=True)
    assert type(sub).__name__ == "FastReceiveClient"
    subscribed = threading.Event()

    def on_message(c: Any, _u: object, m: Any) -> None:
        with lock:
            got.append((m.topic, m.qos, bytes(m.payload)))
        if m.qos:
            c.ack(m.mid, m.qos)

    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_connect = lambda c, *_a: c.subscribe("fast/#", 1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fast-pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        assert subscribed.wait(5)
        sent: list[tuple[str, int, bytes]] = []

        def burst(tag: str) -> None:
            infos = []
            for i in range(300):
                size, qos = SIZES[i % len(SIZES)], i % 2
                payload = bytes([i % 251]) * size
                props = _props(UserProperty=[("i", str(i))]) if i % 3 == 0 else None
                topic = f"fast/{tag}/{i}"
                infos.append(pub.publish(topic, payload, qos=qos, properties=props))
                sent.append((topic, qos, payload))
            for info in infos:
                info.wait_for_publish(5)

        def wait_for(n: int) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(got) < n:
                time.sleep(0.05)

        burst("a")
        wait_for(len(sent))
        subscribed.clear()
        sub.loop_stop()
        sub.reconnect()  # a new socket (test_a_new_socket_starts_with_an_empty_buffer)
        sub.loop_start()
        assert subscribed.wait(5)
        burst("b")
        wait_for(len(sent))
        with lock:
            # MQTT orders messages per QoS: the publisher holds QoS 1 beyond its in-flight window.
            for qos in (0, 1):
                assert [m for m in got if m[1] == qos] == [m for m in sent if m[1] == qos], \
                    f"every QoS {qos} message, in order, topic and payload intact"
            assert len(got) == len(sent)
        assert sub.buffered() == 0
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
