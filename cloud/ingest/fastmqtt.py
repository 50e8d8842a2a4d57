"""paho's MQTT client with a cheaper receive path, for the cloud's subscribers (issue 19).

Under a flood from one gateway, the bridge reads the flood at the rate its receive path
allows, and the other gateways' alerts wait behind it in the broker's queue for the bridge
(docs/scale.md, the flood section). Most of that cost per message was paho's own, measured
with a no-op callback: three socket reads per packet (command byte, remaining length,
body) and, under MQTT 5, a ``Properties`` object built and cleared for every PUBLISH:
~27,000 messages per CPU-second; ~75,000 without both, ~90,000 with whole packets taken
from the buffer (100,000 flood messages of 500 bytes; in the bridge 17 -> 13 us each).

:func:`make_client` returns a ``paho.mqtt.client.Client`` subclass that

- reads the socket in :data:`READ_CHUNK` pieces and serves paho's small reads from that
  buffer (``_sock_recv``); ``loop_read`` reads packets on while the buffer holds bytes (else
  ``select()`` would wait for new bytes while whole packets sit in the buffer);
- hands a packet that is whole in the buffer to paho's handler directly, setting the read
  state paho's three reads would have set (``_packet_read``); a packet split across reads
  goes through paho's reads;
- decodes MQTT 5 PUBLISH packets of QoS 0 and 1 itself, checking but not decoding their
  properties: ``message.properties`` is None (the session reads topic, payload, mid and
  QoS only), and calls ``on_message`` directly unless per-topic callbacks were added. QoS 2, and MQTT 3, go through paho unchanged; so does everything else (acks,
  keepalive, reconnects, TLS).

A malformed PUBLISH is refused as paho refuses it (its own decoder sees it: the connection
is dropped and re-established; unacknowledged messages are redelivered). The hooks are
paho internals (written against paho 2.2.0): where the installed paho lacks one,
:func:`make_client` returns the plain client (slower, same behaviour) and logs why.
tests/cloud/test_fastmqtt.py decodes the same packets with this and with paho, and reads
a stream cut at random points.
"""

from __future__ import annotations

import logging
from typing import Any

from edgevib.extras import require

log = logging.getLogger(__name__)

READ_CHUNK = 65536  # bytes per socket read: ~120 flood messages of 500 bytes
_HOOKS = ("_sock_recv", "_packet_read", "_handle_publish", "_handle_on_message", "_send_puback", "loop_read")
_client_class: Any = None


def decode_publish_v5(header: int, packet: bytes | bytearray) -> tuple[bytes, int, int, bytes]:
    """``(topic, mid, qos, payload)`` of an MQTT 5 PUBLISH of QoS 0 or 1, properties skipped.

    ``header`` is the fixed header's first byte, ``packet`` what follows the remaining
    length. ValueError on a packet paho would refuse as malformed.

    >>> decode_publish_v5(0x32, b"\\x00\\x03a/b\\x00\\x07\\x00hello")
    (b'a/b', 7, 1, b'hello')
    """
    qos = (header & 0x06) >> 1
    if qos > 1:
        raise ValueError(f"QoS {qos}: not decoded here")
    n = len(packet)
    if n < 2:
        raise ValueError("PUBLISH shorter than its topic length")
    pos = 2 + ((packet[0] << 8) | packet[1])
    topic = bytes(packet[2:pos])
    mid = 0
    if qos:
        if pos + 2 > n:
            raise ValueError("PUBLISH without its packet id")
        mid = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
    # Property length: a variable byte integer of at most 4 bytes.
    plen, mult = 0, 1
    for i in range(4):
        if pos >= n:
            raise ValueError("PUBLISH without its property length")
        byte = packet[pos]
        pos += 1
        plen += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            break
        if i == 3:
            raise ValueError("property length longer than 4 bytes")
    pos += plen
    if pos > n:
        raise ValueError(f"properties ({plen} bytes) longer than the packet")
    return topic, mid, qos, bytes(packet[pos:])


def client_class() -> Any:
    """The client class :func:`make_client` instantiates (paho's own if a hook is missing)."""
    global _client_class  # noqa: PLW0603 - built once, on first use (paho is an optional extra)
    if _client_class is not None:
        return _client_class
    mqtt = require("paho.mqtt.client", extra="cloud", feature="cloud MQTT client")
    missing = [h for h in _HOOKS if not hasattr(mqtt.Client, h)]
    if missing:
        log.warning("cloud MQTT: paho %s lacks %s; using its plain client (slower receive under a flood)",
                    getattr(mqtt, "__version__", "?"), ", ".join(missing))
        _client_class = mqtt.Client
        return _client_class
    from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion  # noqa: PLC0415

    success, v5 = MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTProtocolVersion.MQTTv5
    message_class, invalid = mqtt.MQTTMessage, mqtt.mqtt_ms_invalid
    new_message, received_info = message_class.__new__, mqtt.MQTTMessageInfo(0)

    class FastReceiveClient(mqtt.Client):  # type: ignore[name-defined]
        _rsock: Any = None  # the socket _rbuf was read from (a reconnect makes a new one)
        _rbuf: bytes = b""
        _rpos = 0

        def _sock_recv(self, bufsize: int) -> bytes:
            if self._sock is not self._rsock:  # a new connection: the old one's bytes are void
                self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
            if self._rpos >= len(self._rbuf):
                data: bytes = super()._sock_recv(max(bufsize, READ_CHUNK))
                if len(data) <= bufsize:
                    return data
                self._rbuf, self._rpos = data, 0
            start = self._rpos
            self._rpos = start + bufsize
            return self._rbuf[start:start + bufsize]

        def buffered(self) -> int:
            """Bytes read from the socket that paho has not taken yet."""
            return max(0, len(self._rbuf) - self._rpos) if self._sock is self._rsock else 0

        def loop_read(self, max_packets: int = 1) -> Any:
            rc = super().loop_read(max_packets)
            while rc == success and self._sock is not None and self.buffered():
                rc = super().loop_read(max_packets)
            return rc

        _filtered = False  # message_callback_add was called: paho dispatches

        def message_callback_add(self, sub: str, callback: Any) -> None:
            self._filtered = True
            super().message_callback_add(sub, callback)

        def _packet_read(self) -> Any:
            # A whole packet in the buffer: set paho's read state as its three reads would
            # have (command, remaining length, body) and let it handle the packet from there.
            pkt = self._in_packet
            if pkt["command"] == 0 and self._sock is self._rsock:
                buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
                if pos + 1 < end and buf[pos]:
                    length, shift, i = 0, 0, pos + 1
                    while i < end and shift < 28:
                        byte = buf[i]
                        i += 1
                        length |= (byte & 0x7F) << shift
                        shift += 7
                        if not byte & 0x80:
                            if i + length <= end:
                                pkt["command"], pkt["have_remaining"], pkt["remaining_length"] = buf[pos], 1, length
                                pkt["to_process"], pkt["packet"] = 0, buf[i:i + length]
                                self._rpos = i + length
                            break
            return super()._packet_read()

        def _handle_publish(self) -> Any:
            header, packet = self._in_packet["command"], self._in_packet["packet"]
            if self._protocol != v5 or (header & 0x06) >> 1 > 1:
                return super()._handle_publish()
            try:
                topic, mid, qos, payload = decode_publish_v5(header, packet)
            except ValueError:
                return super()._handle_publish()  # paho's own decoder names what is malformed
            # MQTTMessage's own __init__ also builds the *publisher's* MQTTMessageInfo (a
            # threading.Condition): ~40 % of the cost of receiving a message, for a handle
            # nothing reads on a received one. Every slot is set here; info is a shared stub.
            message = new_message(message_class)
            message.timestamp, message.state, message.mid, message._topic = mqtt.time_func(), invalid, mid, topic
            message.dup, message.qos, message.retain = bool(header & 0x08), qos, bool(header & 0x01)
            message.payload, message.properties, message.info = payload, None, received_info
            # paho's dispatch matches the topic against per-topic callbacks first: skipped while
            # there are none (a tenth of the receive cost), with its locking and error handling.
            on_message = self._on_message
            if self._filtered or on_message is None:
                self._handle_on_message(message)
            else:
                with self._in_callback_mutex:
                    try:
                        on_message(self, self._userdata, message)
                    except Exception as err:
                        self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                        if not self.suppress_exceptions:
                            raise
            if qos == 1 and not self._manual_ack:
                return self._send_puback(mid)
            return success

    _client_class = FastReceiveClient
    return _client_class


def make_client(**kwargs: Any) -> Any:
    """``paho.mqtt.client.Client(**kwargs)`` with the cheaper receive path where paho allows it."""
    return client_class()(**kwargs)
