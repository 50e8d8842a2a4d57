"""MQTT topics: one prefix, names, a builder per gateway and a parser (shared by edge and cloud).

Every topic lives under ``<prefix>/<site>/<gateway>/``, the prefix ``edgevib/v1`` unless
a deployment sets another (``Topics(..., prefix=)``, ``parse_topic(..., prefix=)``,
``subscription(..., prefix=)``; the cloud's ``bridge.topic_prefix``). Names (site, gateway,
sensor) are 1-64 characters of ``A-Z a-z 0-9 _ - . :``, so they can never hold the
MQTT separators or wildcards ``/ + #``.

>>> t = Topics("plant1", "gw-7")
>>> t.raw("de")
'edgevib/v1/plant1/gw-7/sensors/de/raw'
>>> parse_topic("edgevib/v1/plant1/gw-7/sensors/de/raw")
TopicInfo(site='plant1', gateway='gw-7', kind='raw', sensor='de')
>>> subscription("alerts", prefix="acme/vib")
'acme/vib/+/+/alerts'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgevib.protocol.errors import ProtocolError

__all__ = ["KINDS", "NAME_MAX", "PREFIX", "STATUS_OFFLINE", "STATUS_ONLINE", "TopicInfo", "Topics",
           "check_name", "check_prefix", "parse_topic", "subscription"]

PREFIX = "edgevib/v1"  # the default topic prefix; see check_prefix
NAME_MAX = 64
_NAME = re.compile(rf"[A-Za-z0-9_.:-]{{1,{NAME_MAX}}}")
# models: signed model updates to the agent; model_status: the agent's verdict on them;
# evidence: raw windows behind alerts (binary, edgevib/protocol/evidence.py); labels: operators'
# labels for a gateway's alerts (cloud side); indicators: per-sensor condition indicators
# (edge/indicators.py), periodic.
KINDS: tuple[str, ...] = ("raw", "alerts", "heartbeat", "status", "models", "cmd", "evidence", "model_status",
                          "labels", "indicators")
STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a valid site/gateway/sensor name, else raise ProtocolError."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ProtocolError("bad_name", f"{what}={value!r}",
                            f"use 1-{NAME_MAX} characters of A-Z a-z 0-9 _ - . : (no '/', '+', '#')")
    return value


def check_prefix(value: object) -> str:
    """Return ``value`` if it is a usable topic prefix (levels of names joined by ``/``), else raise."""
    levels = value.split("/") if isinstance(value, str) else [None]
    if not all(isinstance(lv, str) and _NAME.fullmatch(lv) for lv in levels):
        raise ProtocolError("bad_topic", f"topic prefix {value!r}",
                            "use levels of A-Z a-z 0-9 _ - . : joined by '/', no leading or trailing '/' "
                            f"and no wildcards, e.g. {PREFIX!r}")
    return str(value)


@dataclass(frozen=True)
class TopicInfo:
    site: str
    gateway: str
    kind: str
    sensor: str | None = None


@dataclass(frozen=True)
class Topics:
    """Topic builder for one gateway (under ``prefix``, :data:`PREFIX` by default)."""

    site: str
    gateway: str
    prefix: str = PREFIX

    def __post_init__(self) -> None:
        check_name(self.site, "site")
        check_name(self.gateway, "gateway")
        check_prefix(self.prefix)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    def raw(self, sensor: str) -> str:
        return f"{self.base}/sensors/{check_name(sensor, 'sensor')}/raw"

    @property
    def raw_all(self) -> str:
        """Subscription for every sensor of this gateway."""
        return f"{self.base}/sensors/+/raw"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def heartbeat(self) -> str:
        return f"{self.base}/heartbeat"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def models(self) -> str:
        return f"{self.base}/models"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def evidence(self) -> str:
        return f"{self.base}/evidence"

    @property
    def model_status(self) -> str:
        return f"{self.base}/model_status"

    @property
    def labels(self) -> str:
        return f"{self.base}/labels"

    @property
    def indicators(self) -> str:
        return f"{self.base}/indicators"


def subscription(kind: str, site: str = "+", gateway: str = "+", prefix: str = PREFIX) -> str:
    """Wildcard subscription, e.g. ``subscription("alerts")`` -> ``edgevib/v1/+/+/alerts``."""
    if kind not in KINDS:
        raise ProtocolError("bad_topic", f"kind={kind!r}", f"use one of {', '.join(KINDS)}")
    parts = [site if site == "+" else check_name(site, "site"),
             gateway if gateway == "+" else check_name(gateway, "gateway")]
    tail = "sensors/+/raw" if kind == "raw" else kind
    return f"{check_prefix(prefix)}/{parts[0]}/{parts[1]}/{tail}"


def parse_topic(topic: str, prefix: str = PREFIX) -> TopicInfo:
    """Split a concrete topic under ``prefix`` into site, gateway, kind (and sensor for ``raw``)."""
    if prefix != PREFIX:  # the agent parses every frame's topic: check only prefixes not known good
        check_prefix(prefix)
    if not isinstance(topic, str) or not topic.startswith(prefix + "/"):
        raise ProtocolError("bad_topic", f"topic {topic!r}", f"topics start with {prefix}/")
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) == 5 and parts[2] == "sensors" and parts[4] == "raw":
        site, gw, _, sensor, _ = parts
        return TopicInfo(check_name(site, "site"), check_name(gw, "gateway"), "raw", check_name(sensor, "sensor"))
    if len(parts) == 3 and parts[2] in KINDS and parts[2] != "raw":
        return TopicInfo(check_name(parts[0], "site"), check_name(parts[1], "gateway"), parts[2])
    raise ProtocolError("bad_topic", f"topic {topic!r}",
                        "use <prefix>/<site>/<gateway>/sensors/<sensor>/raw or .../<kind> with kind one of " + ", ".join(KINDS[1:]))
