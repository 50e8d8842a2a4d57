"""Simulated gateways for tests, the demo and the benchmark: real MQTT, real protocol.

Each publish is remembered in ``published`` so a test can compute the expected
aggregates independently of the job.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevib.cloud.config import CloudConfig
from edgevib.cloud.process import ChildGroup

from edgevib.broker import parse_url
from edgevib.extras import require
from edgevib.protocol import PREFIX, Topics, dumps, make_alert, make_heartbeat


@dataclass
class Published:
    alerts: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[tuple[str, bytes]] = field(default_factory=list)
    indicators: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0


# The simulator stands in for an agent's decision (which weighs confidence and physics,
# edgevib.protocol.derive_severity): bigger CWRU faults get a higher severity, so
# tests and the benchmark see every severity.
SIM_SEVERITY = {"007": "info", "014": "warning", "021": "critical"}


class GatewaySim:
    """One gateway: ``alert()``, ``heartbeat()``, ``raw()`` publish with QoS 1 and wait for PUBACK."""

    def __init__(self, broker_url: str, site: str, gateway: str, *, model_sha256: str = "0" * 64,
                 clock: Callable[[], float] = time.time, prefix: str = PREFIX) -> None:
        mqtt = require("paho.mqtt.client", extra="edge", feature="gateway simulator")
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self.topics = Topics(site, gateway, prefix)
        self.site, self.gateway = site, gateway
        self.clock = clock
        self.model = {"name": "cnn", "version": "1", "sha256": model_sha256}
        self.published = Published()
        self._lock = threading.Lock()
        host, port, _ = parse_url(broker_url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{site}-{gateway}-{id(self):x}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self._n = 0

    def _publish(self, topic: str, payload: bytes, wait: bool = True) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(10)

    def alert(self, cls: str = "IR021", *, sensor: str = "de", state: str = "raised", t_ns: int | None = None,
              kind: str = "fault", wait: bool = True, severity: str | None = None, **extra: Any) -> dict[str, Any]:
        with self._lock:
            self._n += 1
            t = t_ns if t_ns is not None else int(self.clock() * 1e9) + self._n  # unique ids even in one ns
        if kind == "fault":
            doc = make_alert(site=self.site, gateway=self.gateway, sensor=sensor, kind=kind, state=state, t_ns=t,
                             cls=cls, probability=0.9, model=self.model, physics=cls[:2].rstrip("0123456789"),
                             severity=severity or SIM_SEVERITY.get(cls.split("@")[0][-3:], "warning"))
        else:
            doc = make_alert(site=self.site, gateway=self.gateway, sensor=sensor, kind=kind, state=state, t_ns=t,
                             anomaly_score=3.0, model=self.model, severity=severity)
        doc.update(extra)
        self._publish(self.topics.alerts, dumps(doc), wait)
        self.published.alerts.append(doc)
        return doc

    def indicators(self, doc: dict[str, Any]) -> None:
        """Publish one sensor's indicators (``edgevib.protocol.make_indicators``), at QoS 1
        (the agent uses QoS 0; tests count every message)."""
        self._publish(self.topics.indicators, dumps(doc))
        self.published.indicators.append(doc)

    def model_status(self, doc: dict[str, Any]) -> None:
        """Publish a verdict (``edgevib.protocol.updates.make_status``) as an agent's updater does."""
        self._publish(self.topics.model_status, dumps(doc))

    def republish(self, doc: dict[str, Any]) -> None:
        """Send an alert again with the same id (what an edge outbox does after a lost PUBACK)."""
        self._publish(self.topics.alerts, dumps(doc))
        self.published.duplicates += 1

    def heartbeat(self, wait: bool = True, model_sha256: str | None = None) -> dict[str, Any]:
        if model_sha256 is not None:
            self.model = {**self.model, "sha256": model_sha256}
        doc = make_heartbeat(site=self.site, gateway=self.gateway, t_ns=int(self.clock() * 1e9), uptime_s=1.0,
                             model=self.model, sensors={"de": {"frames": 1}}, drops={}, counters={},
                             resources={}, outbox_pending=0, agent_version="sim")
        self._publish(self.topics.heartbeat, dumps(doc), wait)
        self.published.heartbeats.append(doc)
        return doc

    def raw(self, topic_kind: str, payload: bytes) -> None:
        """Publish arbitrary bytes on this gateway's ``alerts``/``heartbeat``/``status`` topic."""
        topic = f"{self.topics.base}/{topic_kind}"
        self._publish(topic, payload)
        self.published.malformed.append((topic, payload))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class BridgeProcess(ChildGroup):
    """``edgevib cloud bridge --client-id ID --share-group G`` as a child process group.

    :meth:`kill` SIGKILLs it (a crash: nothing flushed, nothing acknowledged);
    :meth:`start` again is its supervisor's restart under the same client id, which
    resumes the MQTT session the broker kept for it; :meth:`stop` is the CLI's Ctrl-C
    (SIGINT: writes what is pending, acks it).
    """

    stop_signal = signal.SIGINT

    def __init__(self, cfg: CloudConfig, workdir: Path, client_id: str, share_group: str = "") -> None:
        super().__init__(cfg, workdir)
        self.client_id, self.share_group = client_id, share_group

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.client_id}-{self.starts}.log"

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait until it is subscribed (its ``bridge: ready`` log line)."""
        self.starts += 1
        cmd = [sys.executable, "-c", "import sys; from edgevib.cli import main; sys.exit(main())", "cloud", "bridge",
               "--config", str(self.config_path), "--client-id", self.client_id, "--share-group", self.share_group]
        proc = self._spawn(cmd, self.log_path)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if b"bridge: ready" in self.log_path.read_bytes():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.kill()
        raise RuntimeError(f"bridge {self.client_id} not ready in {timeout} s: {tail}")

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
