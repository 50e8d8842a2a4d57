"""The agent on a real Mosquitto: real CWRU replays, broker outage, SIGKILL, last-will, garbage.

The agent runs as a process (``python -m edgevib.cli agent``) except in the outage
test, which drives :meth:`Agent.step` itself so it can stop the broker at a known point.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.agent import Agent
from edgevib.edge.cli import model_path
from edgevib.edge.config import load_agent_config
from edgevib.edge.mqtt import MqttLink
from edgevib.edge.outbox import Outbox
from edgevib.edge.runtime import OnnxModel
from edgevib.edge.stream import stream_recording
from edgevib.models.data import load_recording

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.frames import Frame, encode
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
T = proto.Topics("plant", "gw")
IR_FILES = ("IR007_load0_12k_DE_105.npz", "IR014_load0_12k_DE_169.npz", "IR021_load0_12k_DE_209.npz")


@pytest.fixture(scope="module")
def model() -> Path:
    """The packaged zoo model (``EDGEVIB_TEST_MODEL`` may point elsewhere while the zoo is being built)."""
    override = os.environ.get("EDGEVIB_TEST_MODEL")
    return Path(override) if override else model_path("")


class Cloud:
    """A subscriber collecting alerts, heartbeats and status messages of the gateway."""

    def __init__(self, url: str) -> None:
        self.link = MqttLink(url, "cloud", reconnect=(1, 1), connect=False)
        self.link.subscribe(f"{T.base}/#")
        self.link.start()
        assert self.link.wait_connected(5)
        self.alerts: list[dict[str, object]] = []
        self.heartbeats: list[dict[str, object]] = []
        self.status: list[bytes] = []

    def pump(self, seconds: float = 0.0) -> None:
        end = time.monotonic() + seconds
        while True:
            m = self.link.poll(0.05)
            if m is None:
                if time.monotonic() >= end:
                    return
                continue
            if m.topic == T.alerts:
                self.alerts.append(proto.parse_alert(m.payload))
            elif m.topic == T.heartbeat:
                self.heartbeats.append(proto.parse_heartbeat(m.payload))
            elif m.topic == T.status:
                self.status.append(m.payload)

    def until(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        wait_until(lambda: self.pump() or cond(), timeout, what)

    def faults(self, state: str = "raised") -> list[dict[str, object]]:
        return [a for a in self.alerts if a["kind"] == "fault" and a["state"] == state]


@pytest.fixture
def cloud(broker: MosquittoProcess) -> Iterator[Cloud]:
    c = Cloud(broker.url)
    yield c
    c.link.close()


@pytest.fixture
def tx(broker: MosquittoProcess) -> Iterator[MqttLink]:
    link = MqttLink(broker.url, "sensor-tx", reconnect=(1, 1))
    assert link.wait_connected(5)
    yield link
    link.close()


def _agent_proc(broker: MosquittoProcess, model: Path, outbox: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEVIB_ALERT__COOLDOWN_S": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgevib.cli", "-q", "agent", "--broker", broker.url, "--site", "plant",
         "--gateway", "gw", "--model", str(model), "--outbox", str(outbox), "--heartbeat", "0.5", *extra],
        env=env)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    ps: list[subprocess.Popen[bytes]] = []
    yield ps
    for p in ps:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _outbox_rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@pytest.mark.data
def test_real_inner_race_replay_alerts_within_one_second_and_healthy_replays_do_not(
        broker: MosquittoProcess, cloud: Cloud, tx: MqttLink, cwru_dir: Path, model: Path,
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(_agent_proc(broker, model, tmp_path / "ob.sqlite"))
    cloud.until(lambda: bool(cloud.heartbeats), 30, "the agent's first heartbeat")
    healthy = sorted(cwru_dir.glob("normal_*.npz"))
    assert len(healthy) >= 3
    t0: dict[str, int] = {}
    sensors = {f"ir{i}": cwru_dir / f for i, f in enumerate(IR_FILES)} | {p.stem.split("_")[-1]: p for p in healthy}
    sent = 0
    for name, path in sensors.items():
        rec = load_recording(path)
        t0[name] = time.time_ns()
        sent += stream_recording(tx, T, name, rec, frame=4096, dtype="int16", t0_ns=t0[name])

    def all_inferred() -> bool:
        c = cloud.heartbeats[-1]["counters"] if cloud.heartbeats else {}
        return (c.get("frames_in") == sent and c.get("queue_depth") == 0  # type: ignore[union-attr]
                and c.get("pending_windows") == 0)  # type: ignore[union-attr]

    cloud.until(all_inferred, 60, f"all {sent} frames inferred")
    cloud.until(lambda: len({a["sensor"] for a in cloud.faults()} & {"ir0", "ir1", "ir2"}) == 3, 10, "IR alerts")
    cloud.pump(1.0)
    by_sensor = {str(a["sensor"]): a for a in cloud.faults()}
    for i in range(len(IR_FILES)):
        a = by_sensor[f"ir{i}"]
        assert a["fault_type"] == "IR", a
        delay_s = (int(a["t_ns"]) - t0[f"ir{i}"]) / 1e9  # type: ignore[call-overload]
        assert 0 < delay_s <= 1.0, f"{IR_FILES[i]}: alert at {delay_s:.2f} s of signal time"
        assert a["evidence"] and a["model"] and a["probs"]
    healthy_alerts = [a for a in cloud.faults() if not str(a["sensor"]).startswith("ir")]
    assert healthy_alerts == [], "a healthy recording raised a fault alert"
    assert all(a["fault_type"] == "IR" for a in cloud.faults())


def test_alerts_raised_while_the_broker_is_down_arrive_once_after_restart(
        broker: MosquittoProcess, cloud: Cloud, tx: MqttLink, cwru_dir: Path, model: Path, tmp_path: Path) -> None:
    cfg = load_agent_config(None, env={}, broker_url=broker.url, site="plant", gateway="gw",
                            alert={"cooldown_s": 0, "anomaly": False}, outbox={"path": str(tmp_path / "ob.sqlite")},
                            heartbeat_s=3600)
    link = MqttLink(broker.url, "agent", reconnect=(1, 1), connect=False,
                    status=(T.status, proto.STATUS_ONLINE, proto.STATUS_OFFLINE))
    agent = Agent(cfg, OnnxModel(model), link, Outbox(cfg.outbox.path))
    link.start()
    assert link.wait_connected(5)
    rec = load_recording(cwru_dir / IR_FILES[0])
    rec = type(rec)(rec.signal[: 12000 * 2], rec.fs, rec.rpm, rec.label, rec.size_in)
    stream_recording(tx, T, "before", rec, frame=4096)
    cloud.until(lambda: agent.step() or len(cloud.faults()) == 1, 30, "the first alert")
    # frames of four more sensors reach the agent's inbox, then the broker goes away
    for s in ("a", "b", "c", "d"):
        stream_recording(tx, T, s, rec, frame=4096)
    wait_until(lambda: link.stats()["received"] >= 5 + 4 * 5, 10, "frames in the agent's inbox")
    broker.stop()
    wait_until(lambda: not link.connected, 5, "the agent to notice the outage")
    for _ in range(200):
        agent.step()
    assert len(agent.outbox) == 4, "four alerts raised during the outage wait in the outbox"
    broker.start()
    cloud.until(lambda: cloud.link.connected and link.connected, 15, "both links to reconnect")
    cloud.until(lambda: agent.step() or len(cloud.faults()) >= 5, 15, "the held alerts")
    for _ in range(20):
        agent.step()
    cloud.pump(0.5)
    ids = [a["id"] for a in cloud.faults()]
    assert sorted({str(a["sensor"]) for a in cloud.faults()}) == ["a", "b", "before", "c", "d"]
    assert len(set(ids)) == 5, f"each alert once after de-duplication: {ids}"
    assert len(agent.outbox) == 0
    link.close()


def test_sigkill_with_alerts_in_the_outbox_then_restart_delivers_them(
        broker: MosquittoProcess, cloud: Cloud, tx: MqttLink, cwru_dir: Path, model: Path, tmp_path: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    ob = tmp_path / "ob.sqlite"
    p1 = _agent_proc(broker, model, ob)
    procs.append(p1)
    cloud.until(lambda: bool(cloud.heartbeats), 30, "the agent's first heartbeat")
    rec = load_recording(cwru_dir / IR_FILES[1])
    # 2 s: enough windows for k-of-n with any model (the default's window is 0.68 s)
    rec = type(rec)(rec.signal[: 24000], rec.fs, rec.rpm, rec.label, rec.size_in)
    # Freeze the agent, let frames land in its socket buffer, take the broker away, thaw it:
    # it raises alerts it cannot send. Then it is killed before it could ever send them.
    os.kill(p1.pid, signal.SIGSTOP)
    for s in ("k1", "k2", "k3"):
        # int16: 2 s of three sensors (144 kB) fit the stopped agent's socket buffer, as 1 s of
        # float32 did when the default model's window was 2048 samples
        stream_recording(tx, T, s, rec, frame=4096, dtype="int16")
    time.sleep(1.0)
    broker.stop()
    os.kill(p1.pid, signal.SIGCONT)
    wait_until(lambda: ob.exists() and _outbox_rows(ob) >= 3, 30, "three alerts in the outbox")
    p1.send_signal(signal.SIGKILL)
    p1.wait(10)
    assert _outbox_rows(ob) == 3
    broker.start()
    cloud.until(lambda: cloud.link.connected, 15, "the cloud to reconnect")
    cloud.alerts.clear()
    procs.append(_agent_proc(broker, model, ob))
    cloud.until(lambda: len(cloud.faults()) >= 3, 30, "the replayed alerts")
    assert sorted(str(a["sensor"]) for a in cloud.faults()) == ["k1", "k2", "k3"]
    wait_until(lambda: _outbox_rows(ob) == 0, 10, "the outbox to drain on PUBACK")


def test_heartbeats_garbage_counted_and_last_will_on_death(
        broker: MosquittoProcess, cloud: Cloud, tx: MqttLink, model: Path, tmp_path: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    p = _agent_proc(broker, model, tmp_path / "ob.sqlite")
    procs.append(p)
    cloud.until(lambda: bool(cloud.heartbeats) and cloud.status[-1:] == [b"online"], 30, "heartbeat and birth")
    rng = np.random.default_rng(7)
    good = encode(Frame(0, 0, 12000.0, rng.normal(0, 0.1, 4096).astype(np.float32)), "int16")
    garbage = [rng.bytes(int(n)) for n in rng.integers(0, 9000, 200)]
    garbage += [good[:100], good[:-1], good[:44] + b"\0" * (len(good) - 44), b"{\"v\":1}", b"\xff" * 50]
    for i, g in enumerate(garbage):
        tx.publish(T.raw(f"g{i % 4}"), g)
    for i in range(4):  # and real frames still work afterwards
        tx.publish(T.raw("ok"), encode(Frame(i, i * 10**9, 12000.0, rng.normal(0, 0.1, 4096).astype(np.float32))))

    def counted() -> bool:
        hb = cloud.heartbeats[-1]
        return int(hb["counters"].get("dropped", 0)) == len(garbage) and hb["counters"].get("windows", 0) >= 7  # type: ignore[union-attr]

    cloud.until(counted, 20, "every garbage frame counted and good windows inferred")
    hb = cloud.heartbeats[-1]
    assert p.poll() is None, "the agent survived"
    assert sum(hb["drops"].values()) == len(garbage) and len(hb["drops"]) >= 3  # type: ignore[union-attr]
    for key in ("inference_p50_ms", "latency_p99_ms", "queue_depth", "windows"):
        assert key in hb["counters"]  # type: ignore[operator]
    assert hb["resources"]["rss_mb"] > 20 and hb["model"]["sha256"]  # type: ignore[index]
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    cloud.until(lambda: cloud.status[-1:] == [b"offline"], 10, "the last-will offline status")


def test_sigterm_is_a_clean_shutdown_with_offline_status(
        broker: MosquittoProcess, cloud: Cloud, model: Path, tmp_path: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    p = _agent_proc(broker, model, tmp_path / "ob.sqlite")
    procs.append(p)
    cloud.until(lambda: cloud.status[-1:] == [b"online"] and bool(cloud.heartbeats), 30, "birth")
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    cloud.until(lambda: cloud.status[-1:] == [b"offline"], 10, "offline status")
