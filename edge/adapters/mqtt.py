"""The ``mqtt`` adapter: the agent's sink is one MQTT session (``broker_url``, ``username``,
``password``, ``tls.*``, ``client_id``, ``keepalive_s`` at the top level), with the gateway's
retained online/offline status as birth and last-will.

As a source, with no ``[source] url`` the frames ride that same session (the default: one
connection per gateway). With ``url = "mqtt://field-broker:1883"`` frames and speed topics
come from a second session on that broker, with the same credentials and TLS files and
``<client_id>-source`` as client id; commands and model updates still come over the sink.
Both bound their inbox (``inbox_size``, ``inbox_bytes``) and refuse oversized messages
(``max_frame_samples``: the broker's MQTT 5 maximum packet size, else before queueing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgevib.edge.adapters import Source, TopicSource, Uplink, check_options, register, rpm_topics
from edgevib.edge.limits import max_packet, message_limit
from edgevib.edge.mqtt import MqttLink, Tls

from edgevib import protocol as proto
from edgevib.errors import ConfigError

if TYPE_CHECKING:
    from edgevib.edge.config import AgentConfig


def _link(cfg: AgentConfig, url: str, client_id: str, status: tuple[str, bytes, bytes] | None) -> MqttLink:
    return MqttLink(url, client_id, username=cfg.username, password=cfg.password,
                    tls=Tls(cfg.tls.ca, cfg.tls.cert, cfg.tls.key), inbox_size=cfg.inbox_size,
                    inbox_bytes=cfg.inbox_bytes, keepalive=cfg.keepalive_s,
                    # oversized messages: refused by the broker (MQTT 5 maximum packet size), else before queueing
                    max_message=message_limit(cfg.max_frame_samples), max_packet=max_packet(cfg.max_frame_samples),
                    status=status, connect=False)


def _client_id(cfg: AgentConfig) -> str:
    return cfg.client_id or f"edgevib-agent-{cfg.site}-{cfg.gateway}"


def sink(cfg: AgentConfig, topics: proto.Topics) -> Uplink:
    check_options("mqtt", cfg.sink.options, {}, "sink")
    return _link(cfg, cfg.broker_url, _client_id(cfg), (topics.status, proto.STATUS_ONLINE, proto.STATUS_OFFLINE))


def source(cfg: AgentConfig, topics: proto.Topics, uplink: Uplink) -> Source | None:
    check_options("mqtt", cfg.source.options, {})
    if not cfg.source.url:
        if cfg.sink.type != "mqtt":
            raise ConfigError("edge.config.source", f"source.type='mqtt' without source.url, sink.type={cfg.sink.type!r}",
                              "set source.url = 'mqtt://HOST:PORT' (the broker the sensors publish to)")
        return None  # frames ride the sink's session
    return TopicSource(_link(cfg, cfg.source.url, _client_id(cfg) + "-source", None), topics, rpm_topics(cfg),
                       owns_link=True)


register("mqtt", source=source, sink=sink)
