"""Configuration of the edge agent: a TOML file, ``EDGEVIB_...`` variables, then flags.

Top-level keys map to ``EDGEVIB_<KEY>`` (``broker_url`` -> ``EDGEVIB_BROKER_URL``);
section keys join with ``__`` (``alert.k`` -> ``EDGEVIB_ALERT__K``). Sensors are a
TOML table only::

    site = "plant1"
    gateway = "gw-7"
    [sensors.de]
    asset = "pump-3"
    bearing = "cwru-de-6205"
    rpm = 1797

>>> cfg = load_agent_config(None, env={"EDGEVIB_ALERT__K": "2"}, site="s", gateway="g")
>>> cfg.alert.k, cfg.sensor("any").bearing
(2, 'cwru-de-6205')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgevib.edge.limits import largest_message
from edgevib.models.bearing import GEOMETRIES, BearingGeometry
from edgevib.models.errors import ModelsError

from edgevib import config as core_config
from edgevib.errors import ConfigError
from edgevib.protocol import ISO_FOUNDATIONS, ISO_GROUPS, check_name

# The model the agent runs when none is configured (inside package edgevib.models).
# The fault-type model (normal/B/IR/OR on order-domain envelope features of each sensor's own
# bearing and speed; docs/transfer.md): the one that holds on machines it never saw. The
# 10-class CWRU CNNs (zoo/cnn_small.onnx, zoo/cnn.onnx) stay loadable as benchmarks.
DEFAULT_MODEL = "zoo/faulttype.onnx"


def _positive(where: str, value: float, fix: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"edge.config.{where}", f"{where}={value!r}", fix)


@dataclass(frozen=True)
class TlsConfig:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("edge.config.tls", f"cert={self.cert!r}, key={self.key!r}",
                              "set both tls.cert and tls.key (client certificate), or neither")
        for name in ("ca", "cert", "key"):
            p = getattr(self, name)
            if p and not Path(p).expanduser().is_file():
                raise ConfigError(f"edge.config.tls.{name}", f"file {p!r} not found", "point it at an existing PEM file")


@dataclass(frozen=True)
class AlertConfig:
    """k-of-n voting with hysteresis (raise at ``p_on``, clear under ``p_off``) and cooldown."""

    k: int = 3
    n: int = 5
    m: int = 5  # consecutive windows under p_off that clear an alert
    p_on: float = 0.8
    p_off: float = 0.5
    cooldown_s: float = 60.0
    anomaly: bool = True
    anomaly_every: int = 4  # score every n-th window per sensor: the baseline distance costs ~15x the CNN

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n or self.m < 1:
            raise ConfigError("edge.config.alert", f"k={self.k}, n={self.n}, m={self.m}",
                              "use 1 <= alert.k <= alert.n and alert.m >= 1")
        if not 0.0 <= self.p_off < self.p_on <= 1.0:
            raise ConfigError("edge.config.alert", f"p_on={self.p_on}, p_off={self.p_off}",
                              "use 0 <= alert.p_off < alert.p_on <= 1")
        if self.anomaly_every < 1:
            raise ConfigError("edge.config.alert", f"anomaly_every={self.anomaly_every}",
                              "use alert.anomaly_every >= 1 (1 = every window)")
        if not self.cooldown_s >= 0:
            raise ConfigError("edge.config.alert", f"cooldown_s={self.cooldown_s}", "use alert.cooldown_s >= 0")


@dataclass(frozen=True)
class OutboxConfig:
    path: str = "edgevib-outbox.sqlite"
    max_rows: int = 10_000
    max_age_s: float = 7 * 24 * 3600.0
    # After a broker outage, alerts it acknowledged in this many seconds before it went away
    # are published again (edge/replay.py: a crashing Mosquitto can lose them); 0 = off.
    replay_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.replay_s >= 0:
            raise ConfigError("edge.config.outbox", f"replay_s={self.replay_s}", "use seconds >= 0 (0 = off)")
        if self.max_rows < 1:
            raise ConfigError("edge.config.outbox", f"max_rows={self.max_rows}", "use outbox.max_rows >= 1")
        _positive("outbox.max_age_s", self.max_age_s, "use a positive number of seconds")


@dataclass(frozen=True)
class EvidenceUploadConfig:
    """Raw windows sent to the cloud for labelling/retraining (edge/collect.py); off by default."""

    enabled: bool = False
    alert_windows: int = 5  # last K windows of a sensor behind each raised alert
    low_confidence: float = 0.6  # top probability under this: upload the window
    healthy_every: int = 1000  # about 1 in N windows predicted normal (seeded draw)
    per_minute: float = 30.0  # token bucket per kind (alert, low_confidence, healthy_sample)
    max_outbox_bytes: int = 8 * 2**20  # no evidence is queued past this many outbox bytes

    def __post_init__(self) -> None:
        if self.alert_windows < 0 or self.healthy_every < 1 or self.max_outbox_bytes < 1:
            raise ConfigError("edge.config.evidence", f"alert_windows={self.alert_windows}, healthy_every="
                              f"{self.healthy_every}, max_outbox_bytes={self.max_outbox_bytes}",
                              "use alert_windows >= 0, healthy_every >= 1, max_outbox_bytes >= 1")
        if not 0.0 <= self.low_confidence <= 1.0:
            raise ConfigError("edge.config.evidence", f"low_confidence={self.low_confidence}", "use 0..1 (0 = off)")
        _positive("evidence.per_minute", self.per_minute, "use a positive number of windows per minute")


@dataclass(frozen=True)
class UpdateConfig:
    """Signed model updates (edgevib/protocol/updates.py, docs/updates.md); no public key = updates refused."""

    public_key: str = ""  # Ed25519 public key PEM of the model registry
    model_dir: str = "edgevib-models"  # pushed models + current.json; the active one loads at start-up
    shadow_windows: int = 64  # recent windows a new model is shadow-run on before the swap
    probation_batches: int = 50  # batches after a swap in which a failure rolls back
    max_latency_factor: float = 3.0  # new model slower than this x the old one's p50: refused / rolled back
    max_model_bytes: int = 16 * 2**20

    def __post_init__(self) -> None:
        if self.shadow_windows < 1 or self.probation_batches < 0 or self.max_model_bytes < 1:
            raise ConfigError("edge.config.update", f"shadow_windows={self.shadow_windows}, probation_batches="
                              f"{self.probation_batches}, max_model_bytes={self.max_model_bytes}",
                              "use shadow_windows >= 1, probation_batches >= 0, max_model_bytes >= 1")
        if not (math.isfinite(self.max_latency_factor) and self.max_latency_factor >= 1):
            raise ConfigError("edge.config.update", f"max_latency_factor={self.max_latency_factor}", "use >= 1, e.g. 3")
        if self.public_key and not Path(self.public_key).expanduser().is_file():
            raise ConfigError("edge.config.update", f"public_key file {self.public_key!r} not found",
                              "point it at the .pub.pem from `edgevib models keygen`, or leave it empty")


@dataclass(frozen=True)
class IndicatorsConfig:
    """Condition indicators per sensor (edge/indicators.py), published every ``interval_s``."""

    enabled: bool = True
    interval_s: float = 10.0  # agent time between two indicator messages of one sensor

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s >= 0.1):
            raise ConfigError("edge.config.indicators", f"indicators.interval_s={self.interval_s!r}",
                              "use seconds >= 0.1, e.g. 10 (or indicators.enabled = false)")




def _check_adapter(kind: Literal["source", "sink"], name: str) -> None:
    """ConfigError unless an adapter of ``kind`` (source or sink) is registered as ``name``."""
    from edgevib.edge.adapters import names

    if name not in names(kind):
        raise ConfigError(f"edge.config.{kind}", f"{kind}.type={name!r}",
                          f"use one of {', '.join(sorted(names(kind)))} (or register an adapter: docs/agent.md)")


@dataclass(frozen=True)
class SourceConfig:
    """Where frames and shaft speeds come from: an adapter by name (edge/adapters/, docs/agent.md)."""

    type: str = "mqtt"
    url: str = ""  # the adapter's own address (mqtt://, memory://, opc.tcp://...); "": ride the sink's connection
    options: dict[str, str] = field(default_factory=dict)  # the adapter's own keys, [source.options]

    def __post_init__(self) -> None:
        _check_adapter("source", self.type)


@dataclass(frozen=True)
class SinkConfig:
    """The agent's line to the cloud: an adapter by name (``mqtt`` uses broker_url, username, tls.*)."""

    type: str = "mqtt"
    options: dict[str, str] = field(default_factory=dict)  # the adapter's own keys, [sink.options]

    def __post_init__(self) -> None:
        _check_adapter("sink", self.type)


@dataclass(frozen=True)
class SensorConfig:
    """One sensor: its asset, bearing (a known name or four numbers) and shaft speed."""

    asset: str = ""
    bearing: str = "cwru-de-6205"
    n_balls: int | None = None
    ball_diameter: float | None = None
    pitch_diameter: float | None = None
    contact_angle_deg: float = 0.0
    rpm: float = 1797.0  # nominal; with no rpm_topic the agent may estimate the speed around it
    rpm_topic: str | None = None
    speed_estimate: bool = True  # no rpm_topic: estimate the speed from the spectrum (edge/speed.py)
    speed_search: float = 0.15  # ... within rpm * (1 +- speed_search)
    speed_interval_s: float = 5.0  # ... every this many seconds of agent time
    # ISO 10816-3 zone of the velocity indicator: group 1 (large, 300 kW-50 MW) or 2 (medium,
    # 15-300 kW), on a rigid or flexible foundation (docs/agent.md)
    iso_group: int = 2
    iso_foundation: str = "rigid"

    def __post_init__(self) -> None:
        self.geometry()  # validates now, naming the bad key
        if self.iso_group not in ISO_GROUPS:
            raise ConfigError("edge.config.sensors", f"iso_group={self.iso_group!r}",
                              "use 1 (large machines, 300 kW-50 MW) or 2 (medium, 15-300 kW)")
        if self.iso_foundation not in ISO_FOUNDATIONS:
            raise ConfigError("edge.config.sensors", f"iso_foundation={self.iso_foundation!r}",
                              "use 'rigid' or 'flexible' (lowest natural frequency of machine and foundation "
                              "below 1.25x the running speed)")
        _positive("rpm", self.rpm, "give the shaft speed in revolutions per minute")
        if not 0 < self.speed_search < 1 / 3:  # wider would let f/2 or 2f pass for the shaft
            raise ConfigError("edge.config.sensors", f"speed_search={self.speed_search!r}",
                              "use a fraction of rpm between 0 and 1/3, e.g. 0.15")
        _positive("speed_interval_s", self.speed_interval_s, "use a few seconds, e.g. 5")

    def geometry(self) -> BearingGeometry:
        nums = (self.n_balls, self.ball_diameter, self.pitch_diameter)
        if any(v is not None for v in nums):
            if any(v is None for v in nums):
                raise ConfigError("edge.config.sensors", f"n_balls/ball_diameter/pitch_diameter={nums}",
                                  "give all three bearing numbers, or a bearing name")
            try:
                return BearingGeometry(int(self.n_balls or 0), float(self.ball_diameter or 0),
                                       float(self.pitch_diameter or 0), self.contact_angle_deg, "custom")
            except ModelsError as exc:
                raise ConfigError("edge.config.sensors", exc.problem, exc.fix) from exc
        if self.bearing not in GEOMETRIES:
            raise ConfigError("edge.config.sensors", f"bearing={self.bearing!r}",
                              f"use one of {', '.join(GEOMETRIES)} or give n_balls, ball_diameter, pitch_diameter")
        return GEOMETRIES[self.bearing]


@dataclass(frozen=True)
class AgentConfig:
    broker_url: str = "mqtt://127.0.0.1:1883"
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    site: str = "site"
    gateway: str = "gateway"
    model: str = ""  # empty: the packaged default model (DEFAULT_MODEL)
    threads: int = 1
    batch_size: int = 32
    batch_deadline_ms: float = 20.0
    # 0: infer every window. > 0: under overload infer every 2nd/4th overlapping window so a
    # window's latency stays near this budget (edge/shedding.py); must exceed batch_deadline_ms.
    latency_budget_ms: float = 0.0
    hop: int = 0  # samples between windows; 0: the model's own (its edgevib.hop)
    heartbeat_s: float = 5.0
    keepalive_s: int = 30
    inbox_size: int = 20_000
    # Bytes the inbox may hold (payloads + per-message overhead): ~4,000 binary frames of 1,024
    # samples, more than the 3 s alert-latency target's worth for 100 sensors at 12 kHz; a
    # backlog longer than that is stale anyway. Must fit the largest legitimate frame.
    inbox_bytes: int = 16 * 2**20
    max_frame_samples: int = 65_536
    max_sensors: int = 1000  # bounds the state a stream of made-up sensor names can create
    tls: TlsConfig = field(default_factory=TlsConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    alert: AlertConfig = field(default_factory=AlertConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    evidence: EvidenceUploadConfig = field(default_factory=EvidenceUploadConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    indicators: IndicatorsConfig = field(default_factory=IndicatorsConfig)
    default: SensorConfig = field(default_factory=SensorConfig)
    sensors: dict[str, SensorConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edgevib.broker import parse_url

        parse_url(self.broker_url)
        for key in ("site", "gateway"):
            try:
                check_name(getattr(self, key), key)
            except Exception as exc:
                raise ConfigError(f"edge.config.{key}", f"{key}={getattr(self, key)!r}",
                                  "use 1-64 characters of A-Z a-z 0-9 _ - . :") from exc
        if self.hop < 0:
            raise ConfigError("edge.config.hop", f"hop={self.hop}", "use hop >= 1 samples, or 0 for the model's own hop")
        for key in ("threads", "batch_size", "inbox_size", "max_frame_samples", "keepalive_s",
                    "max_sensors"):
            if getattr(self, key) < 1:
                raise ConfigError(f"edge.config.{key}", f"{key}={getattr(self, key)}", f"use {key} >= 1")
        _positive("batch_deadline_ms", self.batch_deadline_ms, "use a few milliseconds, e.g. 20")
        _positive("heartbeat_s", self.heartbeat_s, "use a few seconds, e.g. 5")
        if self.latency_budget_ms != 0 and not (math.isfinite(self.latency_budget_ms)
                                                and self.latency_budget_ms > self.batch_deadline_ms):
            raise ConfigError("edge.config.latency_budget_ms", f"latency_budget_ms={self.latency_budget_ms} with "
                              f"batch_deadline_ms={self.batch_deadline_ms}",
                              "use 0 (every window inferred) or a budget above the batch deadline, e.g. 50")
        if self.inbox_bytes < (need := largest_message(self.max_frame_samples) + 4096):
            raise ConfigError("edge.config.inbox_bytes", f"inbox_bytes={self.inbox_bytes} cannot hold one "
                              f"frame of max_frame_samples={self.max_frame_samples}",
                              f"use inbox_bytes >= {need} (e.g. the default {16 * 2**20}) or lower max_frame_samples")
        if self.username is None and self.password is not None:
            raise ConfigError("edge.config.password", "password set without username", "set username too")
        for name in self.sensors:
            check_name(name, "sensor")

    def sensor(self, name: str) -> SensorConfig:
        """The sensor's own table, or ``default`` for a sensor discovered on the wire."""
        return self.sensors.get(name, self.default)


def load_agent_config(path: Path | str | None = None, *, env: Mapping[str, str] | None = None,
                      **overrides: Any) -> AgentConfig:
    """Defaults < TOML ``path`` < environment < ``overrides`` (flags; ``None`` ignored)."""
    return core_config.load(AgentConfig, path, env=env, overrides=overrides)


def describe() -> str:
    """The settings for ``edgevib agent --help``."""
    return "settings (TOML key, environment variable, type, default):\n" + "\n".join(
        core_config.describe(AgentConfig))
