"""The demo's cloud half: MQTT bridge + Flink job writing a SQLite store, the evidence
collector (windows behind alerts, for the dashboard's sensor page), and the dashboard.

Everything lives in the demo's work directory. What cannot start says why and how to fix
it, and the demo goes on without it (:attr:`CloudSide.problems`).
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def flink_missing() -> str | None:
    """Why the Flink job cannot run here (with the fix), or None."""
    if importlib.util.find_spec("pyflink") is None:
        return "pyflink is not installed; fix: pip install 'edgevib[cloud]'"
    for tool in ("java", "javac", "jar"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (the job needs a JDK 11+); fix: apt-get install openjdk-17-jdk-headless"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CloudSide:
    """``start()`` what can start; ``stop()`` all of it; ``store_alerts()`` reads the store."""

    def __init__(self, broker_url: str, workdir: Path, *, cloud: bool = True, dashboard: bool = True) -> None:
        self.broker_url, self.workdir = broker_url, Path(workdir)
        self.want_cloud, self.want_dashboard = cloud, dashboard
        self.store_url = f"sqlite:///{self.workdir / 'cloud' / 'store.db'}"
        self.evidence_dir = self.workdir / "cloud" / "dataset"
        self.token = secrets.token_urlsafe(24)
        self.dashboard_url: str | None = None
        self.problems: list[str] = []
        self.bridge: Any = None
        self.collector: Any = None
        self.job: Any = None
        self.dash: subprocess.Popen[bytes] | None = None
        self._job_reported = False

    def start_dashboard(self) -> None:
        from edgevib.cloud.store import Store  # noqa: PLC0415 - stdlib sqlite only

        Store(self.store_url).close()  # the schema exists before the job's first write
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        if not self.want_dashboard:
            return
        if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
            self.problems.append("dashboard: starlette/uvicorn missing; fix: pip install 'edgevib[cloud]'")
            return
        port = _free_port()
        self.dash = subprocess.Popen(
            [sys.executable, "-m", "edgevib.cli", "-q", "dashboard", "--host", "127.0.0.1", "--port", str(port),
             "--token", self.token, "--store", self.store_url, "--broker", self.broker_url,
             "--evidence-dir", str(self.evidence_dir), "--registry", str(self.workdir / "registry")],
            stdout=subprocess.DEVNULL)
        self.dashboard_url = f"http://127.0.0.1:{port}/login?token={self.token}"

    def start_cloud(self) -> None:
        """Evidence collector (no JVM needed), then bridge + Flink job when a JDK and pyflink are here."""
        if not self.want_cloud:
            return
        from edgevib.cloud.config import load_config  # noqa: PLC0415

        d = self.workdir / "cloud"
        cfg = load_config(None, env={}, overrides={
            "broker_url": self.broker_url, "store_url": self.store_url, "spool_dir": str(d / "spool"),
            "checkpoint_dir": str(d / "checkpoints"),
            # Fixed sessions: a later demo on the same broker resumes them instead of leaving more behind.
            "bridge": {"client_id": "edgevib-demo-bridge", "flush_ms": 100},
            "evidence": {"dataset_dir": str(self.evidence_dir), "client_id": "edgevib-demo-collector"}})
        try:
            from edgevib.cloud.ingest.collector import Collector  # noqa: PLC0415

            self.collector = Collector(cfg)
            self.collector.start()
        except Exception as exc:  # noqa: BLE001 - the demo goes on without evidence windows
            self.problems.append(f"evidence collector: not started: {exc}")
            self.collector = None
        why = flink_missing()
        if why is not None:
            self.problems.append(f"cloud job: not started: {why}")
            return
        from edgevib.cloud.flink.runner import JobProcess  # noqa: PLC0415
        from edgevib.cloud.ingest.bridge import Bridge  # noqa: PLC0415

        try:
            self.bridge = Bridge(cfg)
            self.bridge.start()
        except Exception as exc:  # noqa: BLE001 - the demo goes on without the cloud job
            self.problems.append(f"cloud bridge: not started: {exc}")
            self.bridge = None
            return
        self.job = JobProcess(cfg, d / "job")
        self.job.start(restore="")

    def check(self) -> str | None:
        """A one-time message if the job died (its log tail), else None."""
        if self.job is not None and not self.job.alive() and not self._job_reported:
            self._job_reported = True
            tail = self.job.log_path.read_text(errors="replace")[-1500:]
            return f"the cloud job exited (log {self.job.log_path}):\n{tail}"
        return None

    def store_alerts(self) -> list[dict[str, Any]]:
        from edgevib.cloud.store import Store  # noqa: PLC0415

        s = Store(self.store_url)
        try:
            rows = s.query("SELECT id, sensor, akind, state, cls FROM alerts ORDER BY ev_ms")
        finally:
            s.close()
        return [dict(zip(("id", "sensor", "kind", "state", "cls"), r, strict=True)) for r in rows]

    def wait_stored(self, ids: set[str], timeout_s: float, *, level_ids: set[str] | None = None,
                    gateway: tuple[str, str] | None = None) -> int:
        """Wait (bounded) until the job stored the alerts ``ids``, and the level crossings
        ``level_ids`` and the ``(site, gateway)`` row its keyed operator writes (it may lag the
        alerts); how many of the alerts it has."""
        if self.job is None or not (ids or level_ids or gateway):
            return 0
        from edgevib.cloud.store import Store  # noqa: PLC0415

        deadline = time.monotonic() + timeout_s
        while True:
            got = len(ids & {a["id"] for a in self.store_alerts()})
            s = Store(self.store_url)
            try:
                levels = {r[0] for r in s.query("SELECT id FROM level_events")} if level_ids else set()
                gw_ok = gateway is None or bool(s.query("SELECT 1 FROM gateways WHERE site = ? AND gateway = ?", gateway))
            finally:
                s.close()
            done = got == len(ids) and (level_ids or set()) <= levels and gw_ok
            if done or time.monotonic() > deadline or not self.job.alive():
                return got
            time.sleep(0.5)

    def stop(self) -> None:
        if self.dash is not None and self.dash.poll() is None:
            self.dash.send_signal(signal.SIGINT)  # uvicorn's clean shutdown
            try:
                self.dash.wait(10)
            except subprocess.TimeoutExpired:
                self.dash.kill()
                self.dash.wait()
        if self.job is not None:
            self.job.stop()
        if self.bridge is not None:
            self.bridge.stop()
        if self.collector is not None:
            self.collector.stop()
