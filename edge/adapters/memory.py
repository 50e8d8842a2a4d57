"""The ``memory`` adapter: sink and source on an in-process :class:`~edgevib.edge.memory.MemoryBus`
(tests, demos, replaying into an agent in the same process).

``[sink] options.bus`` and ``[source] url = "memory://<bus>"`` name the bus (``default``
if not given); :func:`bus` returns it, so the code that feeds the agent can join it. With no
``[source] url`` the frames ride the sink's link, as with MQTT.

>>> from edgevib.edge.config import load_agent_config
>>> from edgevib.edge.adapters import build
>>> from edgevib.protocol import Topics
>>> cfg = load_agent_config(None, env={}, sink={"type": "memory", "options": {"bus": "doc"}},
...                         source={"type": "memory"})
>>> link, src = build(cfg, Topics("site", "gateway"))
>>> link.bus is bus("doc"), src
(True, None)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgevib.edge.adapters import Source, TopicSource, Uplink, check_options, register, rpm_topics
from edgevib.edge.limits import message_limit
from edgevib.edge.memory import MemoryBus, MemoryLink

from edgevib import protocol as proto
from edgevib.errors import ConfigError

if TYPE_CHECKING:
    from edgevib.edge.config import AgentConfig

_BUSES: dict[str, MemoryBus] = {}
SCHEME = "memory://"


def bus(name: str = "default") -> MemoryBus:
    """The process's bus called ``name`` (made on first use)."""
    return _BUSES.setdefault(name, MemoryBus())


def _link(cfg: AgentConfig, bus_name: str, client_id: str, status: tuple[str, bytes, bytes] | None) -> MemoryLink:
    return MemoryLink(bus(bus_name), client_id, inbox_size=cfg.inbox_size, inbox_bytes=cfg.inbox_bytes,
                      max_message=message_limit(cfg.max_frame_samples), status=status, connect=False)


def sink(cfg: AgentConfig, topics: proto.Topics) -> Uplink:
    check_options("memory", cfg.sink.options, {"bus": "the bus's name (default 'default')"}, "sink")
    return _link(cfg, cfg.sink.options.get("bus", "default"), cfg.client_id or "agent",
                 (topics.status, proto.STATUS_ONLINE, proto.STATUS_OFFLINE))


def source(cfg: AgentConfig, topics: proto.Topics, uplink: Uplink) -> Source | None:
    check_options("memory", cfg.source.options, {})
    url = cfg.source.url
    if not url:
        if cfg.sink.type != "memory":
            raise ConfigError("edge.config.source", f"source.type='memory' without source.url, sink.type={cfg.sink.type!r}",
                              "set source.url = 'memory://<bus>'")
        return None  # frames ride the sink's link
    if not url.startswith(SCHEME) or not url[len(SCHEME):]:
        raise ConfigError("edge.config.source", f"source.url={url!r}", "use memory://<bus name>")
    return TopicSource(_link(cfg, url[len(SCHEME):], (cfg.client_id or "agent") + "-source", None), topics,
                       rpm_topics(cfg), owns_link=True)


register("memory", source=source, sink=sink)
