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

from edgevib.edge.errors import ProtocolError
from edgevib.edge.protocol import PREFIX, SEVERITIES, check_prefix

from edgevib.config import load
from edgevib.errors import ConfigError

# The severity names before the protocol had one vocabulary, and what replaced each.
_OLD_SEVERITY = {"low": "info", "medium": "warning", "high": "critical"}


def _positive(where: str, value: float) -> None:
    if not value > 0:
        raise ConfigError("cloud.config", f"{where}={value!r}", "use a positive number")


@dataclass(frozen=True)
class BridgeConfig:
    """MQTT -> spool bridge: persistent session, QoS 1, ack only after the batch is on disk."""

    client_id: str = "edgevib-cloud-bridge"
    topic_prefix: str = PREFIX  # gateways' topics live under it (edgevib.edge.protocol.Topics prefix=)
    flush_ms: int = 100
    max_batch: int = 5000
    # Files older than this are deleted; keep it far above the checkpoint interval so a
    # restart from the last checkpoint never needs a deleted file.
    retention_s: float = 3600.0

    def __post_init__(self) -> None:
        _positive("bridge.flush_ms", self.flush_ms)
        _positive("bridge.max_batch", self.max_batch)
        _positive("bridge.retention_s", self.retention_s)
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
    min_incident_severity: str = "warning"  # one of edgevib.edge.protocol.SEVERITIES
    checkpoint_interval_ms: int = 1000
    # Alerts and dead letters reach the store in batches of this much processing time.
    batch_ms: int = 100
    # Heartbeats reach the liveness operator at most once per gateway per this interval.
    heartbeat_batch_s: float = 1.0
    file_monitor_ms: int = 100
    bundle_time_ms: int = 50
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
                     "bundle_time_ms", "parallelism", "retrain_min_windows", "drift_anomalies", "drift_window_s"):
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

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("cloud.config", f"dashboard.port={self.port}", "use a TCP port (0 = any free one)")
        if not self.host:
            raise ConfigError("cloud.config", "dashboard.host=''", "use 127.0.0.1, or 0.0.0.0 behind TLS")
        if self.token and len(self.token) < 16:
            raise ConfigError("cloud.config", "dashboard.token is shorter than 16 characters",
                              "use a long random token, e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")


@dataclass(frozen=True)
class EvidenceConfig:
    """The evidence collector's dataset store (cloud/dataset.py): where, how big, how fast per gateway."""

    dataset_dir: Path = Path("edgevib-cloud/dataset")
    max_bytes: int = 2**30
    per_gateway_per_min: float = 600.0
    client_id: str = "edgevib-cloud-collector"

    def __post_init__(self) -> None:
        _positive("evidence.max_bytes", self.max_bytes)
        _positive("evidence.per_gateway_per_min", self.per_gateway_per_min)


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
    arch: str = "nsae-lcn"  # what the worker retrains: "nsae-lcn" (about 30 s here) or "cnn" (minutes)
    nsae_iters: int = 150
    clf_iters: int = 300
    cnn_epochs: int = 30
    cnn_steps_per_epoch: int = 60

    def __post_init__(self) -> None:
        if not 0 < self.new_eval_frac < 1:
            raise ConfigError("cloud.config", f"retrain.new_eval_frac={self.new_eval_frac}", "use a fraction, e.g. 0.3")
        if self.arch not in ("nsae-lcn", "cnn"):
            raise ConfigError("cloud.config", f"retrain.arch={self.arch!r}", "use 'nsae-lcn' or 'cnn'")
        if self.push_to not in ("model", "trigger"):
            raise ConfigError("cloud.config", f"retrain.push_to={self.push_to!r}", "use 'model' or 'trigger'")
        if min(self.tolerance_pt, self.min_gain_pt, self.canary_pct) < 0 or self.poll_s <= 0:
            raise ConfigError("cloud.config", "retrain tolerance/min_gain/canary/poll", "use values >= 0 (poll_s > 0)")


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
