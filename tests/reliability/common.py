"""Helpers for the fault-injection suite: an agent process, sensors, a counting subscriber.

Every fault test counts alerts three ways and asserts they agree after de-duplication by
alert id: *published* (the agent's own counters in its heartbeat), *delivered* (distinct
ids a cloud-side subscriber received) and, where the agent's outbox is involved, what
went through it. The counts are written as JSON under ``$EDGEVIB_ARTIFACTS`` (default
``test-artifacts/``) in ``reliability/<fault>.json`` for ``benchmarks/report.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.protocol.frames import Frame, encode
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
T = proto.Topics("rel", "gw")
FS, FRAME = 12000.0, 4096
_SIGNALS: dict[str, np.ndarray] = {}


def artifacts_dir() -> Path:
    d = Path(os.environ.get("EDGEVIB_ARTIFACTS", REPO / "test-artifacts")) / "reliability"
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_counts(fault: str, counts: dict[str, Any]) -> Path:
    """``reliability/<fault>.json`` with the counts and when/where they were taken."""
    path = artifacts_dir() / f"{fault}.json"
    doc = {"fault": fault, "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "loadavg": [round(v, 2) for v in os.getloadavg()], "cores": os.cpu_count(), **counts}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def wait(cond: Callable[[], bool], timeout: float, what: str, *, strict: bool = True) -> bool:
    """Poll ``cond``; on timeout raise (``strict``) or return False so the caller asserts with its counts."""
    try:
        wait_until(cond, timeout, what)
    except AssertionError:
        if strict:
            raise
        return False
    return True


def signal_of(kind: str) -> np.ndarray:
    """5 s of a simulated 12 kHz bearing, ``normal`` or ``IR`` (seeded, cached)."""
    if kind not in _SIGNALS:
        _SIGNALS[kind] = simulate(kind, duration_s=5.0, seed=3 if kind == "IR" else 4)
    return _SIGNALS[kind]


def frames(kind: str, n: int, start: int = 0, t0_ns: int = 0) -> list[bytes]:
    """``n`` consecutive int16 frames of one sensor, from frame ``start`` (the signal loops)."""
    x = signal_of(kind)
    usable = len(x) - len(x) % FRAME
    out = []
    for k in range(start, start + n):
        off = (k * FRAME) % usable
        out.append(encode(Frame(k, t0_ns + round(k * FRAME * 1e9 / FS), FS, x[off:off + FRAME]), "int16"))
    return out


class Subscriber:
    """The cloud side: alerts (QoS 1), heartbeats and status of the gateway, on one paho client.

    ``persistent=True`` keeps an MQTT session (clean_session false), so alerts published
    while this client is reconnecting wait for it in the broker.
    """

    def __init__(self, port: int, client_id: str, *, persistent: bool = False, host: str = "127.0.0.1") -> None:
        self.alerts: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.status: list[bytes] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        c.reconnect_delay_set(1, 2)
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(
            [(T.alerts, 1), (T.heartbeat, 0), (T.status, 1)])
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_disconnect = lambda *a: self._subscribed.clear()
        c.on_message = self._on_message
        c.connect(host, port, keepalive=10)
        c.loop_start()
        self.client = c
        wait(self._subscribed.is_set, 10, "the subscriber's SUBACK")

    def _on_message(self, _c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        with self._lock:
            if m.topic == T.alerts:
                self.alerts.append(proto.parse_alert(m.payload))
            elif m.topic == T.heartbeat:
                self.heartbeats.append(json.loads(m.payload))
            elif m.topic == T.status:
                self.status.append(bytes(m.payload))

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def ids(self) -> set[str]:
        with self._lock:
            return {str(a["id"]) for a in self.alerts}

    def sensors(self) -> set[str]:
        with self._lock:
            return {str(a["sensor"]) for a in self.alerts}

    def last_hb(self) -> dict[str, Any]:
        with self._lock:
            return self.heartbeats[-1] if self.heartbeats else {}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def raised_by_agent(hb: dict[str, Any]) -> int:
    """Alerts the agent produced (raised and cleared, fault and anomaly), from its heartbeat."""
    c = hb.get("counters", {})
    return sum(int(v) for k, v in c.items() if k.startswith("alerts_") and k not in ("alerts_sent", "alerts_acked"))


class Publisher:
    """Sensors' side: one paho client publishing frames at QoS 0 (it reconnects by itself)."""

    def __init__(self, port: int, client_id: str = "rel-sensors") -> None:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        c.reconnect_delay_set(1, 2)
        self._up = threading.Event()
        c.on_connect = lambda *a: self._up.set()
        c.on_disconnect = lambda *a: self._up.clear()
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        wait(self._up.is_set, 10, "the sensor publisher to connect")

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def burst(self, sensors: Sequence[str], kind: str = "IR", n: int = 4) -> int:
        """``n`` frames of each sensor, as fast as paho sends them; returns frames handed to paho."""
        sent = 0
        for s in sensors:
            for f in frames(kind, n):
                info = self.client.publish(T.raw(s), f, qos=0)
                sent += info.rc == paho.MQTT_ERR_SUCCESS
        return sent

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Streamer(threading.Thread):
    """Sensors ``s0..s{n-1}`` in real time; each switches healthy <-> IR every ``period_s``.

    Sensor i is faulty when ``(block + i) % 2 == 0``, so alerts are raised and cleared all
    the time. ``paused`` stops sending (frames are not queued: a sensor's frames are lost
    while its broker is away, as on a real gateway without a local buffer).
    """

    def __init__(self, pub: Publisher, n: int = 4, period_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.pub, self.n, self.period_s = pub, n, period_s
        self.stop_evt, self.paused = threading.Event(), threading.Event()
        self.sent = 0

    def run(self) -> None:
        period = FRAME / FS
        start, k = time.monotonic(), 0
        t0_ns = time.time_ns()
        while not self.stop_evt.is_set():
            ahead = start + k * period - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if not self.paused.is_set():
                block = int(k * period // self.period_s)
                for i in range(self.n):
                    kind = "IR" if (block + i) % 2 == 0 else "normal"
                    f = frames(kind, 1, start=k, t0_ns=t0_ns)[0]
                    if self.pub.client.publish(T.raw(f"s{i}"), f, qos=0).rc == paho.MQTT_ERR_SUCCESS:
                        self.sent += 1
            k += 1

    def stop(self) -> None:
        self.stop_evt.set()
        self.join(5)


def agent_cmd(url: str, outbox: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgevib.cli", "agent", "--broker", url, "--site", T.site, "--gateway",
            T.gateway, "--outbox", str(outbox), "--heartbeat", "0.5", *extra]


def start_agent(cmd: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    """The agent as a process, its log in ``log``; no cool-down, no anomaly baseline (short runs)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEVIB_ALERT__COOLDOWN_S": "0",
                "EDGEVIB_ALERT__ANOMALY": "false", **env}
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def stop_agent(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGCONT)  # a frozen process cannot handle SIGKILL's wait otherwise
        except ProcessLookupError:
            pass
        p.kill()
        p.wait(10)


def outbox_alert_sensors(path: Path) -> list[str]:
    """Sensors of the alerts waiting in the agent's outbox (read-only; the agent keeps writing)."""
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        rows = db.execute("SELECT payload FROM outbox WHERE topic=?", (T.alerts,)).fetchall()
    return [str(json.loads(r[0])["sensor"]) for r in rows]


def settled(sub: Subscriber) -> Callable[[], bool]:
    """True once the agent is idle and its own alert count equals the distinct alerts received.

    Wait with ``strict=False`` and assert the counts afterwards: a loss shows as numbers.
    """

    def check() -> bool:
        hb = sub.last_hb()
        c = hb.get("counters", {})
        return (bool(hb) and c.get("queue_depth", 1) == 0 and c.get("pending_windows", 1) == 0
                and c.get("inflight", 1) == 0 and hb.get("outbox_pending", 1) == 0
                and len(sub.ids()) == raised_by_agent(hb))
    return check


class CloudBridge:
    """The cloud's MQTT -> spool bridge (persistent session, acks after fsync) in this process;
    the distinct alert ids in its spool files are what the cloud side stored."""

    def __init__(self, url: str, tmp: Path, client_id: str) -> None:
        from edgevib.cloud.config import load_config
        from edgevib.cloud.ingest.bridge import Bridge

        self.spool = tmp / "spool"
        self.bridge = Bridge(load_config(None, env={}, overrides={
            "broker_url": url, "spool_dir": str(self.spool), "store_url": f"sqlite:///{tmp}/cloud.db",
            "checkpoint_dir": str(tmp / "ck"), "bridge": {"client_id": client_id, "flush_ms": 50}}))
        self.bridge.start()

    def alert_ids(self, at_least: int = 0, timeout: float = 30.0) -> set[str]:
        """Distinct alert ids spooled so far, waiting (bounded) until there are ``at_least``."""
        import csv

        from edgevib.cloud.ingest.bridge import SPOOL_SUFFIX
        from edgevib.cloud.ingest.records import SPOOL_COLUMN_NAMES

        kind, ident = SPOOL_COLUMN_NAMES.index("kind"), SPOOL_COLUMN_NAMES.index("id")

        def ids() -> set[str]:
            out: set[str] = set()
            for f in sorted(self.spool.glob(f"*{SPOOL_SUFFIX}")):
                with f.open(newline="") as fh:
                    out |= {row[ident] for row in csv.reader(fh) if row and row[kind] == "alert"}
            return out

        wait(lambda: len(ids()) >= at_least, timeout, "the bridge to spool the alerts", strict=False)
        return ids()

    def stop(self) -> None:
        self.bridge.stop()
