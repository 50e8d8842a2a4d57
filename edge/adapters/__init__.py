"""Sources and sinks by name (the eKuiper pattern): ``[source]`` and ``[sink]`` pick them.

A **source** hands the agent :class:`Reading` objects: a sensor id and the bytes of one frame
(the ``edgevib.protocol.frames`` encoding), or a shaft speed; never a transport's topics or
types. A **sink** is the agent's line to the cloud (:class:`edgevib.edge.sink.Sink`: publish,
QoS 1 tokens, acknowledgements); the cloud's commands and model-update chunks arrive on it
as :class:`~edgevib.edge.source.Message` objects, because their topics are the protocol's.

Adapters register by name; the agent's config names one of each::

    [source]
    type = "mqtt"          # frames from <prefix>/<site>/<gateway>/sensors/+/raw
    url = ""               # "": ride the sink's connection (one MQTT session, as before)
    [sink]
    type = "mqtt"          # broker_url, username, tls.* at the top level

:func:`build` makes both from an :class:`~edgevib.edge.config.AgentConfig`. A source whose
frames ride the sink's own connection (``mqtt`` or ``memory`` with no ``url`` of its own) is
``None``: the agent then reads frames and commands from the sink's one inbox through a
:class:`TopicSource`, in arrival order, exactly as one MQTT session delivers them.

Adding a source (OPC UA, Modbus, ...) is one module plus one line in :data:`BUILTIN`
(or a :func:`register` call from your own package); docs/agent.md shows one.

>>> sorted(names("source")), sorted(names("sink"))
(['memory', 'mqtt'], ['memory', 'mqtt'])
>>> from edgevib.edge.memory import MemoryBus, MemoryLink
>>> from edgevib.protocol import Topics
>>> bus, t = MemoryBus(), Topics("plant", "gw")
>>> src = TopicSource(MemoryLink(bus, "agent"), t, {"plant/speed/de": "de"})
>>> _ = MemoryLink(bus, "sensor").publish(t.raw("de"), b"EVIB...")
>>> r = src.poll(0)
>>> (r.sensor, r.kind, r.payload)
('de', 'frame', b'EVIB...')
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from edgevib.edge.sink import Sink
from edgevib.edge.source import Message
from edgevib.edge.source import Source as TopicLink

from edgevib.errors import ConfigError
from edgevib.protocol import Topics, parse_topic

if TYPE_CHECKING:
    from edgevib.edge.config import AgentConfig

log = logging.getLogger(__name__)
Role = Literal["source", "sink"]


@runtime_checkable
class Uplink(Sink, TopicLink, Protocol):
    """What a sink adapter builds: the agent's line to the cloud (publish, acknowledgements),
    on which it also subscribes to its command and model topics."""

    def start(self) -> None:
        """Connect (after the agent subscribed: the subscriptions go out with the first connect)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Reading:
    """What a source hands over: ``payload`` is a frame's bytes (``kind="frame"``) or a shaft
    speed in rpm as ASCII (``kind="rpm"``); ``t`` is the receive time on the source's clock."""

    sensor: str
    payload: bytes
    t: float
    kind: Literal["frame", "rpm"] = "frame"


@runtime_checkable
class Source(Protocol):
    """Where the agent's readings come from. ``poll`` may raise a
    :class:`~edgevib.protocol.errors.ProtocolError` for something it received but cannot attribute
    to a sensor (the agent counts it by its ``reason``); a source that shares the sink's
    connection also hands over the cloud's :class:`Message` objects (commands, updates)."""

    def poll(self, timeout: float) -> Reading | Message | None:
        """The next reading, or ``None`` after ``timeout`` seconds (0 = do not wait)."""
        ...

    def stats(self) -> dict[str, int]:
        """At least ``received``, ``overflow`` (dropped: inbox full) and ``depth`` (queued now)."""
        ...

    def start(self) -> None:
        """Begin receiving (after the agent is built: nothing is lost before it listens)."""
        ...

    def close(self) -> None: ...


class TopicSource:
    """Readings from a topic link (MQTT, memory): ``.../sensors/<sensor>/raw`` is a frame of
    ``<sensor>``; each ``rpm_topics`` entry (topic -> sensor) is that sensor's shaft speed.

    With ``frames=True`` it subscribes the gateway's frame wildcard and the speed topics on
    ``link`` (QoS 0: a late frame is worth less than a fresh one). Anything else that arrives
    on the link (the agent's command and model topics) is handed over as the
    :class:`Message` it is. ``owns_link``: :meth:`start`/:meth:`close` start and close the link
    too (a source with a connection of its own; not when it rides the sink's).
    """

    def __init__(self, link: TopicLink, topics: Topics, rpm_topics: Mapping[str, str] | None = None, *,
                 frames: bool = True, owns_link: bool = False) -> None:
        self.link, self.topics, self.owns_link = link, topics, owns_link
        self._rpm = dict(rpm_topics or {})
        if frames:
            for f in (topics.raw_all, *self._rpm):
                link.subscribe(f)

    def poll(self, timeout: float) -> Reading | Message | None:
        msg = self.link.poll(timeout)
        if msg is None:
            return None
        sensor = self._rpm.get(msg.topic)
        if sensor is not None:
            return Reading(sensor, msg.payload, msg.t, "rpm")
        info = parse_topic(msg.topic, self.topics.prefix)  # ProtocolError: a name the agent counts and drops
        if info.kind == "raw" and info.sensor is not None:
            return Reading(info.sensor, msg.payload, msg.t)
        return msg

    def stats(self) -> dict[str, int]:
        return self.link.stats()

    def start(self) -> None:
        if self.owns_link:
            _lifecycle(self.link, "start")

    def close(self) -> None:
        if self.owns_link:
            _lifecycle(self.link, "close")


def _lifecycle(link: object, what: str) -> None:
    fn = getattr(link, what, None)
    if callable(fn):
        fn()


# -- the registry ------------------------------------------------------------------------------
# (cfg, topics) -> sink; (cfg, topics, sink) -> source, or None when the frames ride the sink's
# connection (the agent reads them from the sink through a TopicSource).
SinkFactory = Callable[["AgentConfig", Topics], Uplink]
SourceFactory = Callable[["AgentConfig", Topics, Uplink], Source | None]

# Adapters shipped with edgevib: name -> (module that registers it when imported, the roles it
# serves). Imported only when named (so `mqtt` pulls in paho only for an agent that uses it).
BUILTIN: dict[str, tuple[str, tuple[Role, ...]]] = {
    "mqtt": ("edgevib.edge.adapters.mqtt", ("source", "sink")),
    "memory": ("edgevib.edge.adapters.memory", ("source", "sink")),
}
_SOURCES: dict[str, SourceFactory] = {}
_SINKS: dict[str, SinkFactory] = {}


def register(name: str, *, source: SourceFactory | None = None, sink: SinkFactory | None = None) -> None:
    """Make ``name`` usable as ``[source] type`` and/or ``[sink] type``."""
    if source is not None:
        _SOURCES[name] = source
    if sink is not None:
        _SINKS[name] = sink


def names(role: Role) -> set[str]:
    """Every adapter name that can serve ``role``."""
    return {n for n, (_, roles) in BUILTIN.items() if role in roles} | set(_SOURCES if role == "source" else _SINKS)


def _factory(role: Role, name: str) -> Any:
    table: Mapping[str, Any] = _SOURCES if role == "source" else _SINKS
    if name not in table and name in BUILTIN:
        importlib.import_module(BUILTIN[name][0])  # registers itself
    if name not in table:
        raise ConfigError(f"edge.config.{role}", f"{role}.type={name!r}",
                          f"use one of {', '.join(sorted(names(role)))}, or register an adapter "
                          "(edgevib.edge.adapters.register; docs/agent.md)")
    return table[name]


def build(cfg: AgentConfig, topics: Topics) -> tuple[Uplink, Source | None]:
    """The sink of ``[sink] type`` and the source of ``[source] type`` for ``cfg``, not yet
    started: subscribe first (the agent does), then start the sink and the source."""
    sink: Uplink = _factory("sink", cfg.sink.type)(cfg, topics)
    source: Source | None = _factory("source", cfg.source.type)(cfg, topics, sink)
    log.info("source %s%s, sink %s", cfg.source.type, f" ({cfg.source.url})" if cfg.source.url else "",
             cfg.sink.type)
    return sink, source


def rpm_topics(cfg: AgentConfig) -> dict[str, str]:
    """Shaft-speed topic -> sensor, from the sensors' ``rpm_topic`` keys."""
    return {s.rpm_topic: name for name, s in cfg.sensors.items() if s.rpm_topic}


def check_options(name: str, options: Mapping[str, str], allowed: Mapping[str, str], role: Role = "source") -> None:
    """Refuse an unknown ``[<role>.options]`` key, naming the adapter and the keys it takes
    (``allowed``: key -> what it means)."""
    for key in options:
        if key not in allowed:
            raise ConfigError(f"edge.config.{role}.options", f"{name} {role} option {key!r}",
                              f"use one of {', '.join(sorted(allowed)) or '(none)'}")


__all__ = ["BUILTIN", "Reading", "Source", "TopicSource", "Uplink", "build", "check_options", "names", "register",
           "rpm_topics"]
