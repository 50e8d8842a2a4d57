"""Configuration of the cloud job and its MQTT bridge (TOML + ``EDGEVIB_`` overrides).

>>> cfg = load_config(None, env={"EDGEVIB_JOB__OFFLINE_AFTER_S": "5"})
>>> cfg.job.offline_after_s, cfg.store_url
(5.0, 'sqlite:///edgevib-cloud/store.db')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from edgevib.cloud.flink.levels import LevelLogic, LevelSpec, parse_sensor_rules
from edgevib.models import arch as archs

from edgevib.config import load
from edgevib.errors import ConfigError
from edgevib.protocol import PREFIX, SEVERITIES, check_prefix
from edgevib.protocol.errors import ProtocolError

# The severity names before the protocol had one vocabulary, and what replaced each.
_OLD_SEVERITY = {"low": "info", "medium": "warning", "high": "critical"}


def _positive(where: str, value: float) -> None:
    if not value > 0:
        raise ConfigError("cloud.config", f"{where}={value!r}", "use a positive number")


@dataclass(frozen=True)
class BridgeConfig:
    """MQTT -> spool bridge: persistent session, QoS 1, ack only after the batch is on disk."""

    client_id: str = "edgevib-cloud-bridge"  # one per bridge process (EDGEVIB_BRIDGE__CLIENT_ID)
    # MQTT 5 shared subscription group ($share/<group>/...): bridges with the same group split
    # the gateways' messages; each needs its own client_id and must restart under it (the
    # broker keeps a dead member's unacked messages in its session; docs/scale.md). Empty: no sharing.
    share_group: str = ""
    topic_prefix: str = PREFIX  # gateways' topics live under it (edgevib.protocol.Topics prefix=)
    flush_ms: int = 100
    max_batch: int = 5000
    # Files older than this are deleted; keep it far above the checkpoint interval so a
    # restart from the last checkpoint never needs a deleted file.
    retention_s: float = 3600.0
    # Dead letters (rejected messages) written per gateway per minute (a token bucket holding
    # one minute's worth); beyond it they are counted, and one 'rate_limited' dead letter per
    # gateway every dead_summary_s carries the count. dead_letters_total_per_min caps all
    # gateways together (invented gateway names, unparseable topics).
    dead_letters_per_min: float = 60.0
    dead_letters_total_per_min: float = 600.0
    dead_summary_s: float = 60.0
    # Disk quota of the spool directory (bytes). Over it, spool files the job has consumed
    # are deleted oldest first, then dead letters are dropped (counted); alerts, heartbeats,
    # labels and indicators are always written.
    spool_max_bytes: int = 2**30

    def __post_init__(self) -> None:
        _positive("bridge.flush_ms", self.flush_ms)
        if any(c in self.share_group for c in "/+#$ "):
            raise ConfigError("cloud.config", f"bridge.share_group={self.share_group!r}",
                              "use a plain name such as 'bridges' (no '/', '+', '#', '$' or spaces), or '' for none")
        _positive("bridge.max_batch", self.max_batch)
        _positive("bridge.retention_s", self.retention_s)
        _positive("bridge.dead_letters_per_min", self.dead_letters_per_min)
        _positive("bridge.dead_summary_s", self.dead_summary_s)
        _positive("bridge.spool_max_bytes", self.spool_max_bytes)
        if self.dead_letters_total_per_min < self.dead_letters_per_min:
            raise ConfigError("cloud.config", f"bridge.dead_letters_total_per_min={self.dead_letters_total_per_min}",
                              f"use at least bridge.dead_letters_per_min={self.dead_letters_per_min}")
        if self.spool_max_bytes < 2**20:
            raise ConfigError("cloud.config", f"bridge.spool_max_bytes={self.spool_max_bytes}",
                              "use at least 1 MiB (1048576); a spool batch alone can be hundreds of kB")
        try:
            check_prefix(self.topic_prefix)
        except ProtocolError as exc:
            raise ConfigError("cloud.config", f"bridge.topic_prefix={self.topic_prefix!r}", exc.fix) from exc


@dataclass(frozen=True)
class JobConfig:
    """Event-time windows, incidents and liveness of the Flink job."""

    window_s: float = 10.0
    out_of_orderness_s: float = 2.0
    incident_k: int = 3
    incident_window_s: float = 60.0
    incident_bucket_s: float = 1.0
    incident_resolve_s: float = 120.0
    offline_after_s: float = 30.0
    min_incident_severity: str = "warning"  # one of edgevib.protocol.SEVERITIES
    checkpoint_interval_ms: int = 1000
    # Alerts and dead letters reach the store in batches of this much processing time.
    batch_ms: int = 100
    # Heartbeats reach the liveness operator at most once per gateway per this interval.
    heartbeat_batch_s: float = 1.0
    file_monitor_ms: int = 100
    bundle_time_ms: int = 50
    # Keyed states the fleet operator's Python worker keeps in memory (one per gateway, sensor
    # with levels, asset with incidents, model with labels). A miss is a blocking round trip
    # to the JVM: at PyFlink's default (1,000) 2,000 gateways thrashed the cache and the job
    # ran ~9 s behind its heartbeats (benchmarks/fleet_operator.py, docs/scale.md).
    state_cache_size: int = 50_000
    parallelism: int = 1
    # Retrain triggers: this many newly labelled windows (per model) ...
    retrain_min_windows: int = 20
    # ... or this many anomaly alerts from one gateway within drift_window_s.
    drift_anomalies: int = 5
    drift_window_s: float = 300.0
    # Condition indicators are rolled up per sensor over each of these windows (whole seconds):
    # min/mean/max of velocity RMS, acceleration RMS, kurtosis (store table indicator_rollups).
    indicator_rollups_s: tuple[float, ...] = (60.0, 3600.0)

    def __post_init__(self) -> None:
        for name in ("window_s", "out_of_orderness_s", "incident_k", "incident_window_s", "incident_bucket_s",
                     "incident_resolve_s", "offline_after_s", "checkpoint_interval_ms", "batch_ms", "heartbeat_batch_s", "file_monitor_ms",
                     "bundle_time_ms", "state_cache_size", "parallelism", "retrain_min_windows", "drift_anomalies", "drift_window_s"):
            _positive(f"job.{name}", getattr(self, name))
        if self.min_incident_severity in _OLD_SEVERITY:
            raise ConfigError("cloud.config", f"job.min_incident_severity={self.min_incident_severity!r} is an old "
                              "severity name", f"use {_OLD_SEVERITY[self.min_incident_severity]!r} (severities are now "
                              f"{', '.join(SEVERITIES)}; low -> info, medium -> warning, high -> critical)")
        if self.min_incident_severity not in SEVERITIES:
            raise ConfigError("cloud.config", f"job.min_incident_severity={self.min_incident_severity!r}",
                              f"use one of {', '.join(SEVERITIES)}")
        if self.heartbeat_batch_s >= self.offline_after_s:
            raise ConfigError("cloud.config", f"job.heartbeat_batch_s={self.heartbeat_batch_s}",
                              "use an interval well below job.offline_after_s")
        if self.incident_window_s < self.incident_bucket_s:
            raise ConfigError("cloud.config", f"job.incident_window_s={self.incident_window_s}",
                              "use a window at least as long as job.incident_bucket_s")
        # Window bounds are stored as epoch milliseconds computed from whole seconds in SQL.
        for name in ("window_s", "incident_bucket_s", "drift_window_s"):
            v = getattr(self, name)
            if abs(v - round(v)) > 1e-9:
                raise ConfigError("cloud.config", f"job.{name}={v}", "use a whole number of seconds")
        rollups = self.indicator_rollups_s
        if any(not (v >= 1 and abs(v - round(v)) < 1e-9) for v in rollups) or len(set(rollups)) != len(rollups):
            raise ConfigError("cloud.config", f"job.indicator_rollups_s={list(rollups)}",
                              "use distinct whole numbers of seconds >= 1, e.g. [60, 3600] (empty: no rollups)")


@dataclass(frozen=True)
class DashboardConfig:
    """``edgevib dashboard``: where it listens and the token it wants (empty: generate one at start)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""
    # Live alert streams (SSE) open at once; the next client gets 503.
    max_sse_clients: int = 32
    # Most rows one API page returns (?limit= above it is refused with 400).
    max_page: int = 2000

    def __post_init__(self) -> None:
        _positive("dashboard.max_sse_clients", self.max_sse_clients)
        _positive("dashboard.max_page", self.max_page)
        if not 0 <= self.port <= 65535:
            raise ConfigError("cloud.config", f"dashboard.port={self.port}", "use a TCP port (0 = any free one)")
        if not self.host:
            raise ConfigError("cloud.config", "dashboard.host=''", "use 127.0.0.1, or 0.0.0.0 behind TLS")
        if self.token and len(self.token) < 16:
            raise ConfigError("cloud.config", "dashboard.token is shorter than 16 characters",
                              "use a long random token, e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")


@dataclass(frozen=True)
class EvidenceConfig:
    """The evidence collector's dataset store (cloud/learning/dataset.py): where, how big, how fast per gateway."""

    dataset_dir: Path = Path("edgevib-cloud/dataset")
    max_bytes: int = 2**30
    per_gateway_per_min: float = 600.0
    client_id: str = "edgevib-cloud-collector"

    def __post_init__(self) -> None:
        _positive("evidence.max_bytes", self.max_bytes)
        _positive("evidence.per_gateway_per_min", self.per_gateway_per_min)


@dataclass(frozen=True)
class RetentionConfig:
    """``[retention]``: days each store table keeps (0 = forever), run by ``edgevib cloud maintain``.

    Raw indicators are downsampled before they go: hours that have no hourly rollup get one
    computed from the raw rows first (cloud/retention.py).
    """

    indicators_days: float = 14.0  # raw condition indicators
    fine_rollups_days: float = 31.0  # indicator rollups finer than an hour (job.indicator_rollups_s, e.g. 60 s)
    rollups_days: float = 400.0  # indicator rollups of an hour or coarser
    dead_letters_days: float = 7.0
    fleet_events_days: float = 90.0  # online/offline/inventory history (gateways holds one row per gateway)
    counts_days: float = 400.0  # asset_counts, site_counts, asset_health (windowed alert counts)
    model_status_days: float = 180.0
    retrain_days: float = 365.0  # retrain_triggers, retrain_runs, finished rollouts
    evidence_days: float = 0.0  # unlabelled evidence windows (row and file); labelled ones stay
    alerts_days: float = 0.0  # alerts with their acks and notes, resolved incidents
    level_events_days: float = 0.0  # level crossings (warning/alarm raised and cleared), part of each asset's history
    labels_days: float = 0.0
    interval_s: float = 3600.0  # how often `edgevib cloud run` runs it
    batch_rows: int = 50_000  # rows deleted per statement (short locks for the job's writes)
    vacuum: bool = True  # SQLite: VACUUM when over a quarter of the file is free pages

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_days") and not (v >= 0):
                raise ConfigError("cloud.config", f"retention.{f.name}={v!r}", "use days >= 0 (0 keeps forever)")
        _positive("retention.interval_s", self.interval_s)
        _positive("retention.batch_rows", self.batch_rows)
        if 0 < self.rollups_days < self.fine_rollups_days:
            raise ConfigError("cloud.config", f"retention.rollups_days={self.rollups_days}",
                              f"keep hourly rollups at least as long as finer ones (fine_rollups_days={self.fine_rollups_days})")
        if 0 < self.fine_rollups_days < self.indicators_days:
            raise ConfigError("cloud.config", f"retention.fine_rollups_days={self.fine_rollups_days}",
                              f"keep rollups at least as long as raw indicators (indicators_days={self.indicators_days})")


@dataclass(frozen=True)
class RetrainConfig:
    """``[retrain]`` of the cloud config (``EDGEVIB_RETRAIN__...``)."""

    base: str = ""  # .npz written by save_base(): fixed training and held-out windows
    registry: str = "model-registry"  # the same default as `edgevib models` (list, push, rollback)
    private_key: str = ""  # Ed25519 PEM that signs promoted models (edgevib models keygen)
    tolerance_pt: float = 1.0  # the held-out accuracy may fall by at most this much
    min_gain_pt: float = 5.0  # ... and the new data's must rise by at least this much
    new_eval_frac: float = 0.3  # newest share of each sensor's labelled windows kept for evaluation
    push: bool = True
    push_to: str = "model"  # "model": gateways running the retrained model; "trigger": those that labelled
    canary_pct: float = 0.0
    push_timeout_s: float = 60.0
    poll_s: float = 1.0
    seed: int = 0
    arch: str = "nsae-lcn"  # what the worker retrains: "nsae-lcn" (about 30 s here), "cnn" (minutes) or "faulttype"
    method: str = "finetune"  # arch "faulttype": how the fleet model adapts to the labels (docs/adapt.md)
    nsae_iters: int = 150
    clf_iters: int = 300
    cnn_epochs: int = 30
    cnn_steps_per_epoch: int = 60
    # Compression of a retrained model before the gate (the gate judges what ships): "auto" =
    # the arch's own choice (models/arch: static INT8 for the CNN, none for the others), "none", or
    # steps that need no training among those the arch lists: "int8" (calibrated on base
    # windows), "dfq" (no data).
    compress: str = "auto"

    def compress_choices(self) -> tuple[str, ...]:
        """Compression steps this arch takes that need no training (``retrain.compress`` values)."""
        return tuple(s for s in archs.get(self.arch).compress if s in ("int8", "dfq"))

    def compress_step(self) -> str:
        """The step a retrained model gets before the gate, "" for none (``auto`` resolved)."""
        if self.compress == "auto":
            return archs.get(self.arch).retrain_compress
        return "" if self.compress == "none" else self.compress

    def __post_init__(self) -> None:
        if not 0 < self.new_eval_frac < 1:
            raise ConfigError("cloud.config", f"retrain.new_eval_frac={self.new_eval_frac}", "use a fraction, e.g. 0.3")
        if self.arch not in archs.names():  # the trainers registered in models/arch/
            raise ConfigError("cloud.config", f"retrain.arch={self.arch!r}", f"use one of {', '.join(archs.names())}")
        if self.compress not in ("auto", "none", *self.compress_choices()):
            raise ConfigError("cloud.config", f"retrain.compress={self.compress!r} for arch {self.arch!r}",
                              f"use one of {', '.join(('auto', 'none', *self.compress_choices()))}")
        if self.method not in ("finetune", "finetune-sp", "rkd", "ke", "mlp"):
            raise ConfigError("cloud.config", f"retrain.method={self.method!r}",
                              "use 'finetune', 'finetune-sp', 'rkd', 'ke' or 'mlp' (EDGEVIB_RETRAIN__METHOD; "
                              "docs/adapt.md)")
        if self.push_to not in ("model", "trigger"):
            raise ConfigError("cloud.config", f"retrain.push_to={self.push_to!r}", "use 'model' or 'trigger'")
        if min(self.tolerance_pt, self.min_gain_pt, self.canary_pct) < 0 or self.poll_s <= 0:
            raise ConfigError("cloud.config", "retrain tolerance/min_gain/canary/poll", "use values >= 0 (poll_s > 0)")


@dataclass(frozen=True)
class LevelsConfig:
    """``[levels]``: warning/alarm levels of velocity RMS per sensor, for the job's level-crossing events.

    ``default`` and each ``sensors`` entry's SPEC: ``iso`` (ISO 10816-3 zone C = warning, D =
    alarm, of the group/foundation the edge reports), ``absolute:W:A`` (mm/s) or ``baseline:W:A``
    (W x / A x the median of the sensor's first ``baseline_n`` readings). ``sensors``:
    ``SITE/GATEWAY/SENSOR=SPEC`` entries (shell wildcards; first match wins; in the environment
    comma-separated: ``EDGEVIB_LEVELS__SENSORS='plant/*/pump=baseline:2:4,plant/gw1/fan=absolute:3:6'``).
    A level is entered after ``confirm_n`` readings above it and left after ``confirm_n`` readings
    at or below (1 - hysteresis_pct/100) x it (cloud/flink/levels.py).
    """

    enabled: bool = True
    default: str = "iso"
    sensors: tuple[str, ...] = ()
    baseline_n: int = 30
    hysteresis_pct: float = 10.0
    confirm_n: int = 2

    def __post_init__(self) -> None:
        LevelSpec.parse(self.default)
        parse_sensor_rules(self.sensors)
        _positive("levels.baseline_n", self.baseline_n)
        _positive("levels.confirm_n", self.confirm_n)
        if not 0 <= self.hysteresis_pct < 100:
            raise ConfigError("cloud.config", f"levels.hysteresis_pct={self.hysteresis_pct}", "use a percentage in [0, 100), e.g. 10")

    def logic(self) -> LevelLogic:
        """The job's :class:`~edgevib.cloud.flink.levels.LevelLogic` for these settings."""
        return LevelLogic(default=LevelSpec.parse(self.default), rules=parse_sensor_rules(self.sensors),
                          baseline_n=self.baseline_n, hysteresis=self.hysteresis_pct / 100.0, confirm_n=self.confirm_n)


@dataclass(frozen=True)
class CloudConfig:
    """Everything ``edgevib cloud run`` needs; paths are relative to the working directory."""

    broker_url: str = "mqtt://127.0.0.1:1883"
    store_url: str = "sqlite:///edgevib-cloud/store.db"
    spool_dir: Path = Path("edgevib-cloud/spool")
    checkpoint_dir: Path = Path("edgevib-cloud/checkpoints")
    fleet_topic: str = "edgevib/v1/fleet/events"
    python_executable: str = ""
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    job: JobConfig = field(default_factory=JobConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    # Not written by to_toml: the job does not need it, and the token stays out of job files.
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)

    def __post_init__(self) -> None:
        if not (self.store_url.startswith("sqlite:///") or self.store_url.startswith(("postgresql://", "postgres://"))):
            raise ConfigError("cloud.config", f"store_url={self.store_url!r}",
                              "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
        if not self.fleet_topic or "+" in self.fleet_topic or "#" in self.fleet_topic:
            raise ConfigError("cloud.config", f"fleet_topic={self.fleet_topic!r}", "use a topic without wildcards")


def load_config(path: Path | str | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> CloudConfig:
    """Defaults < TOML file < ``EDGEVIB_...`` environment < ``overrides``."""
    return load(CloudConfig, path, env=env, overrides=overrides)


def to_toml(cfg: CloudConfig) -> str:
    """Write ``cfg`` as TOML, so a job started in another process sees the same settings."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (tuple, list)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {val(getattr(cfg, k))}" for k in
             ("broker_url", "store_url", "spool_dir", "checkpoint_dir", "fleet_topic", "python_executable")]
    # Every table but the dashboard's (its token stays out of job files).
    for section in (f.name for f in fields(cfg) if is_dataclass(getattr(cfg, f.name)) and f.name != "dashboard"):
        sub = getattr(cfg, section)
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {val(v)}" for k, v in vars(sub).items()]
    return "\n".join(lines) + "\n"
