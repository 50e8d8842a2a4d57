"""paho-mqtt 2.x behind the source/sink contract; no paho type leaves this module.

Callbacks run in paho's network thread and only enqueue (messages into a bounded
:class:`Inbox`, acknowledged tokens into a list). Reconnection is paho's own
(``reconnect_delay_set`` + ``loop_start``); subscriptions and the retained birth
message are (re)issued in ``on_connect``; the last-will is the retained offline status.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from edgevib.edge.source import Inbox, Message, SizeLimit
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgevib.broker import parse_url
from edgevib.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tls:
    """TLS files; ``ca`` alone authenticates the broker, ``cert`` + ``key`` the client too."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class MqttLink:
    """One MQTT connection serving as both :class:`Source` and :class:`Sink`.

    ``status`` is ``(topic, online, offline)``: ``online`` is published retained on every
    connect, ``offline`` is the last-will and is also published on :meth:`close`.
    ``max_pending`` bounds QoS 1 messages paho holds; beyond it :meth:`publish` returns None.
    ``inbox_size``/``inbox_bytes``/``max_message`` bound the inbox (see :class:`Inbox`).
    ``max_packet`` (bytes) connects with MQTT 5 and sends it as the CONNECT Maximum Packet
    Size: the broker then discards larger messages for this client instead of sending
    them. paho has no limit of its own on received packets (it reads whatever length the
    broker announces, up to 256 MB), and MQTT 3.1.1 has no way to ask for one: without
    ``max_packet`` the link speaks 3.1.1 and only ``max_message`` guards, after paho read
    the packet.
    """

    def __init__(self, url: str, client_id: str = "", *, username: str | None = None,
                 password: str | None = None, tls: Tls | None = None, keepalive: int = 30,
                 inbox_size: int = 10_000, inbox_bytes: int | None = None,
                 max_message: int | SizeLimit | None = None, max_packet: int | None = None,
                 max_pending: int = 10_000,
                 status: tuple[str, bytes, bytes] | None = None, reconnect: tuple[int, int] = (1, 30),
                 clock: Callable[[], float] = time.monotonic, connect: bool = True) -> None:
        self.host, self.port, use_tls = parse_url(url)
        self.url, self.status, self.clock = url, status, clock
        self.client_id = client_id or f"edgevib-{uuid.uuid4().hex[:8]}"
        self.inbox = Inbox(inbox_size, max_bytes=inbox_bytes, max_message=max_message)
        self._v5 = max_packet is not None
        self._connect_props: Properties | None = None
        if max_packet is not None:
            if not 0 < max_packet <= 268_435_455:  # MQTT's largest packet
                raise ConfigError("edge.mqtt", f"max_packet={max_packet}", "use 1..268435455 bytes")
            self._connect_props = Properties(PacketTypes.CONNECT)
            self._connect_props.MaximumPacketSize = max_packet
        self.filters: list[str] = []
        self._qos: dict[str, int] = {}
        self.connects = 0
        self._connected = threading.Event()
        self._lock = threading.Lock()  # never held while calling paho (it calls us back under its own)
        self._tracked: dict[int, paho.MQTTMessageInfo] = {}
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._seen: list[int] = []
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311)
        if username is not None:
            c.username_pw_set(username, password)
        if use_tls or (tls is not None and tls.ca):
            t = tls or Tls()
            if bool(t.cert) != bool(t.key):
                raise ConfigError("edge.mqtt", f"tls cert={t.cert!r} key={t.key!r}",
                                  "give both tls.cert and tls.key, or neither")
            c.tls_set(ca_certs=t.ca, certfile=t.cert, keyfile=t.key)
        if status is not None:
            c.will_set(status[0], status[2], qos=1, retain=True)
        c.reconnect_delay_set(*reconnect)
        c.max_queued_messages_set(max_pending)
        c.max_inflight_messages_set(1000)
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_message, c.on_publish = self._on_message, self._on_publish
        c.on_subscribe = self._on_subscribe
        self._sub_mid = -1
        self._closing = False
        self._client = c
        self._keepalive = keepalive
        if connect:
            self.start()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho retries with backoff until the broker answers."""
        # MQTT 5: a clean session on every connect, as 3.1.1's default (subscriptions are
        # re-issued in on_connect anyway); session expiry 0, the default, ends it on disconnect.
        if self._v5:
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive, clean_start=True,
                                       properties=self._connect_props)
        else:
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Publish the offline status (if connected), disconnect, stop the network thread."""
        self._closing = True
        if self.connected and self.status is not None:
            info = self._client.publish(self.status[0], self.status[2], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("offline status not confirmed by %s", self.url)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- paho callbacks: enqueue only -------------------------------------------------
    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            log.warning("%s refused the connection: %s", self.url, rc)
            return
        if self.status is not None:
            client.publish(self.status[0], self.status[1], qos=1, retain=True)
        self.connects += 1
        with self._lock:
            filters = list(self.filters)
        if filters:  # "connected" once the broker confirmed the subscriptions
            _rc, mid = client.subscribe([(f, self._sub_opts(self._qos.get(f, 0))) for f in filters])
            self._sub_mid = -1 if mid is None else mid
        else:
            self._connected.set()
        log.info("connected to %s as %s", self.url, self.client_id)

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
        if mid == self._sub_mid:
            self._connected.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("lost %s (%s); reconnecting", self.url, rc)
        self._connected.clear()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.inbox.put(Message(msg.topic, bytes(msg.payload), self.clock()))

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
        self._acks.put(mid)

    # -- Source ----------------------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        with self._lock:
            self.filters.append(topic_filter)
            self._qos[topic_filter] = qos
        if self.connected:
            self._client.subscribe(topic_filter, qos=qos)

    def _sub_opts(self, qos: int) -> Any:
        """paho wants SubscribeOptions in a list subscription under MQTT 5, a bare QoS under 3.1.1."""
        return SubscribeOptions(qos=qos) if self._v5 else qos

    def poll(self, timeout: float) -> Message | None:
        return self.inbox.poll(timeout)

    def stats(self) -> dict[str, int]:
        return {**self.inbox.stats(), "connects": self.connects}

    # -- Sink ------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> int | None:
        if not self.connected:
            return None
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            raise ConfigError("edge.mqtt", f"publish to {topic!r}: {exc}",
                              "use a topic without wildcards and a payload under 256 MB") from exc
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            return None
        if qos == 0:
            return 0 if info.rc == paho.MQTT_ERR_SUCCESS else None
        # NO_CONN here still leaves the message in paho's queue: it is sent on reconnect.
        with self._lock:
            self._tracked[info.mid] = info
        return int(info.mid)

    def acked(self) -> list[int]:
        """Drain PUBACKs; a mid counts only if its own message is marked published (mids wrap)."""
        out: list[int] = []
        with self._lock:
            while True:
                try:
                    self._seen.append(self._acks.get_nowait())
                except queue.Empty:
                    break
            later: list[int] = []
            for mid in self._seen:
                info = self._tracked.get(mid)
                if info is None:
                    continue  # a QoS 0 message, or already counted
                if info.is_published():
                    del self._tracked[mid]
                    out.append(mid)
                else:  # paho marks it published just after on_publish returns
                    later.append(mid)
            self._seen = later
        return out

