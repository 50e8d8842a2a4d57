"""Signed model updates on a real Mosquitto with real agents (``run_agent`` in threads, tiny ONNX models).

(a) a signed update installs, the heartbeat shows its sha256, and it survives a restart;
(b) tampered and unsigned updates are rejected and the old model keeps alerting;
(c) an always-NaN model fails shadow-run; a NaN-on-loud-input model passes it and is
rolled back in probation; (d) a canary with another public key halts a rollout.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgevib.cloud.rollout import push
from edgevib.cloud.store import Store
from edgevib.edge.cli import run_agent
from edgevib.edge.config import load_agent_config
from edgevib.edge.mqtt import MqttLink
from edgevib.models.registry import Registry, keygen

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.frames import Frame, encode
from edgevib.protocol.updates import encode_install
from tests.conftest import wait_until
from tests.edge.tinymodels import tiny_onnx

pytestmark = pytest.mark.integration
SITE = "plant"


class Watcher:
    """Collects heartbeats, alerts, model_status and models messages of every gateway of the site."""

    def __init__(self, url: str) -> None:
        self.link = MqttLink(url, "watcher", connect=False)
        self.link.subscribe(f"edgevib/v1/{SITE}/#")
        self.link.start()
        assert self.link.wait_connected(5)
        self.msgs: list[tuple[str, str, Any]] = []  # (gateway, kind, doc)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            m = self.link.poll(0.05)
            if m is None:
                continue
            info = proto.parse_topic(m.topic)
            doc: Any = m.payload if info.kind in ("raw", "status", "models") else json.loads(m.payload)
            with self._lock:
                self.msgs.append((info.gateway, info.kind, doc))

    def of(self, gw: str, kind: str) -> list[Any]:
        with self._lock:
            return [d for g, k, d in self.msgs if g == gw and k == kind]

    def model_sha(self, gw: str) -> str | None:
        hb = self.of(gw, "heartbeat")
        return str(hb[-1]["model"]["sha256"]) if hb else None

    def status(self, gw: str, update_id: str) -> dict[str, Any] | None:
        return next((s for s in reversed(self.of(gw, "model_status")) if s["update_id"] == update_id), None)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.link.close()


class AgentThread:
    def __init__(self, broker: MosquittoProcess, tmp: Path, gw: str, model: Path, public_key: Path, **update: Any):
        self.cfg = load_agent_config(
            None, env={}, broker_url=broker.url, site=SITE, gateway=gw, model=str(model), heartbeat_s=0.3,
            batch_size=8, alert={"k": 2, "n": 3, "anomaly": False, "cooldown_s": 0},
            outbox={"path": str(tmp / f"{gw}-outbox.sqlite")},
            update={"public_key": str(public_key), "model_dir": str(tmp / f"{gw}-models"), **update})
        self.start()

    def start(self) -> None:
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=run_agent, args=(self.cfg, self.stop_ev), daemon=True)
        self.t.start()

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join(10)
        assert not self.t.is_alive()


@pytest.fixture
def env(broker: MosquittoProcess, tmp_path: Path) -> Iterator[dict[str, Any]]:
    priv, pub = keygen(tmp_path / "keys")
    _, other_pub = keygen(tmp_path / "other-keys")
    base = tmp_path / "base.onnx"
    base.write_bytes(tiny_onnx("good", version="1"))
    for kind in ("good", "nan", "nan_loud"):
        (tmp_path / f"{kind}.onnx").write_bytes(tiny_onnx(kind, version="2"))
    reg = Registry(tmp_path / "registry", private_key=priv)
    for kind in ("good", "nan", "nan_loud"):
        reg.add(tmp_path / f"{kind}.onnx")
    watcher = Watcher(broker.url)
    tx = MqttLink(broker.url, "sensors")
    assert tx.wait_connected(5)
    agents: list[AgentThread] = []

    def agent(gw: str, key: Path = pub, **update: Any) -> AgentThread:
        a = AgentThread(broker, tmp_path, gw, base, key, **update)
        agents.append(a)
        wait_until(lambda: watcher.model_sha(gw) is not None, 20, f"{gw}'s first heartbeat")
        return a

    yield {"reg": reg, "watcher": watcher, "tx": tx, "agent": agent, "other_pub": other_pub, "tmp": tmp_path,
           "url": broker.url, "base_sha": hashlib.sha256(base.read_bytes()).hexdigest()}
    for a in agents:
        if a.t.is_alive():
            a.stop()
    tx.close()
    watcher.close()


_seq: dict[str, int] = {}


def send(tx: MqttLink, gw: str, n: int, amplitude: float, seed: int = 0) -> None:
    """``n`` frames of 4096 samples: noise (``amplitude`` 0) or a loud tone plus noise."""
    rng, t = np.random.default_rng(seed), np.arange(4096)
    for _ in range(n):
        i = _seq[gw] = _seq.get(gw, -1) + 1
        x = rng.normal(0, 0.1, 4096) + amplitude * np.sin(2 * np.pi * 157 * (t + i * 4096) / 12000)
        assert tx.publish(proto.Topics(SITE, gw).raw("de"),
                          encode(Frame(i, i * 4096 * 10**9 // 12000, 12000.0, x.astype(np.float32))), qos=1)


def windows(w: Watcher, gw: str) -> int:
    hb = w.of(gw, "heartbeat")
    return int(hb[-1]["counters"].get("windows", 0)) if hb else 0


def test_signed_update_installs_reports_new_sha_and_survives_restart(env: dict[str, Any]) -> None:
    w, reg = env["watcher"], env["reg"]
    a = env["agent"]("gw")
    send(env["tx"], "gw", 10, 0.0)
    wait_until(lambda: windows(w, "gw") >= 15, 20, "quiet windows inferred")
    store = Store(f"sqlite:///{env['tmp'] / 'cloud.sqlite'}")
    res = push(reg, "good", None, [(SITE, "gw")], broker_url=env["url"], timeout_s=30, store=store)
    assert res.ok and res.gateways[f"{SITE}/gw"]["result"] == "installed", res.gateways
    new_sha = reg.get("good").manifest.sha256
    assert new_sha != env["base_sha"]
    wait_until(lambda: w.model_sha("gw") == new_sha, 10, "the heartbeat to report the new model")
    st = w.status("gw", res.id)
    assert st is not None and st["shadow"]["real_windows"] >= 15 and st["sha256"] == new_sha
    assert store.query("SELECT status FROM rollouts WHERE id = ?", (res.id,)) == [("done",)]
    assert store.query("SELECT result FROM model_status WHERE gateway = 'gw'") == [("installed",)]
    a.stop()
    n = len(w.of("gw", "heartbeat"))
    a.start()  # the pushed model is what the agent starts on
    wait_until(lambda: len(w.of("gw", "heartbeat")) > n + 1, 20, "heartbeats after the restart")
    assert all(hb["model"]["sha256"] == new_sha for hb in w.of("gw", "heartbeat")[n:])


def test_tampered_and_unsigned_updates_are_rejected_and_the_old_model_keeps_alerting(env: dict[str, Any]) -> None:
    w, tx, entry = env["watcher"], env["tx"], env["reg"].get("good")
    env["agent"]("gw")
    data = bytearray(entry.data())
    data[len(data) // 2] ^= 0xFF  # one bit pattern changed after signing
    topic = proto.Topics(SITE, "gw").models
    for uid, sig, blob in (("tampered", entry.signature, bytes(data)), ("unsigned", None, entry.data())):
        for p in encode_install(uid, entry.manifest, sig, blob):
            tx.publish(topic, p, qos=1)
    wait_until(lambda: w.status("gw", "tampered") and w.status("gw", "unsigned"), 10, "both verdicts")
    assert w.status("gw", "tampered")["result"] == "rejected"  # type: ignore[index]
    assert w.status("gw", "tampered")["reason"] == "hash_mismatch"  # type: ignore[index]
    assert w.status("gw", "unsigned")["reason"] == "unsigned"  # type: ignore[index]
    send(tx, "gw", 6, 2.0)  # loud: the running (old) model says IR007
    wait_until(lambda: any(a["state"] == "raised" for a in w.of("gw", "alerts")), 15, "an alert from the old model")
    alert = next(a for a in w.of("gw", "alerts") if a["state"] == "raised")
    assert alert["class"] == "IR007" and alert["model"]["sha256"] == env["base_sha"]
    assert w.model_sha("gw") == env["base_sha"]


def test_nan_models_are_refused_in_shadow_run_or_rolled_back_in_probation(env: dict[str, Any]) -> None:
    w, tx, reg = env["watcher"], env["tx"], env["reg"]
    env["agent"]("gw", probation_batches=1000)
    send(tx, "gw", 10, 0.0)
    wait_until(lambda: windows(w, "gw") >= 15, 20, "quiet windows inferred")
    res = push(reg, "nan", None, [(SITE, "gw")], broker_url=env["url"], timeout_s=30)
    g = res.gateways[f"{SITE}/gw"]
    assert (res.status, g["result"], g["reason"]) == ("failed", "rejected", "shadow_failed"), g
    assert "NaN" in g["detail"]
    res = push(reg, "nan_loud", None, [(SITE, "gw")], broker_url=env["url"], timeout_s=30)
    assert res.ok, res.gateways  # quiet windows only: shadow-run cannot see the flaw
    loud_sha = reg.get("nan_loud").manifest.sha256
    wait_until(lambda: w.model_sha("gw") == loud_sha, 10, "the NaN-on-loud model running")
    send(tx, "gw", 6, 8.0)  # max |x| > 5: the new model returns NaN
    wait_until(lambda: any(s["result"] == "rolled_back" for s in w.of("gw", "model_status")), 15, "a rollback")
    rb = next(s for s in w.of("gw", "model_status") if s["result"] == "rolled_back")
    assert (rb["update_id"], rb["reason"], rb["sha256"]) == (res.id, "probation_failed", loud_sha)
    assert "NaN" in rb["detail"] and rb["active"]["sha256"] == env["base_sha"]
    wait_until(lambda: w.model_sha("gw") == env["base_sha"], 10, "the old model back in the heartbeat")
    # the batch that failed was re-run on the old model: the loud tone still raises its alert
    wait_until(lambda: any(a["state"] == "raised" for a in w.of("gw", "alerts")), 15, "an alert after the rollback")


def test_canary_with_another_key_rejects_and_the_rollout_halts(env: dict[str, Any]) -> None:
    w, reg = env["watcher"], env["reg"]
    env["agent"]("gw-canary", key=env["other_pub"])
    env["agent"]("gw-rest")
    res = push(reg, "good", None, [(SITE, "gw-canary"), (SITE, "gw-rest")], broker_url=env["url"],
               canary_pct=50, timeout_s=30)
    assert res.status == "halted" and res.canaries == [f"{SITE}/gw-canary"]
    c, r = res.gateways[f"{SITE}/gw-canary"], res.gateways[f"{SITE}/gw-rest"]
    assert (c["result"], c["reason"]) == ("rejected", "bad_signature")
    assert r["result"] == "not_sent"
    time.sleep(0.5)  # give a stray message time to show up before asserting its absence
    assert w.of("gw-rest", "models") == [] and w.of("gw-rest", "model_status") == []
    assert w.model_sha("gw-rest") == env["base_sha"] and w.model_sha("gw-canary") == env["base_sha"]


def test_a_canary_rolling_back_during_the_soak_halts_the_rollout(env: dict[str, Any]) -> None:
    w, reg, tx = env["watcher"], env["reg"], env["tx"]
    env["agent"]("gw-canary", probation_batches=1000)
    env["agent"]("gw-rest")
    loud_sha = reg.get("nan_loud").manifest.sha256

    def loud_once_installed() -> None:  # the canary's live traffic turns loud after the swap
        wait_until(lambda: w.model_sha("gw-canary") == loud_sha, 20, "the canary on the new model")
        send(tx, "gw-canary", 6, 8.0)

    t = threading.Thread(target=loud_once_installed)
    t.start()
    res = push(reg, "nan_loud", None, [(SITE, "gw-canary"), (SITE, "gw-rest")], broker_url=env["url"],
               canary_pct=50, timeout_s=30, canary_soak_s=5.0)
    t.join(30)
    c = res.gateways[f"{SITE}/gw-canary"]
    assert res.status == "halted" and (c["result"], c["reason"]) == ("rolled_back", "probation_failed"), res.gateways
    assert res.gateways[f"{SITE}/gw-rest"]["result"] == "not_sent" and w.of("gw-rest", "models") == []
    wait_until(lambda: w.model_sha("gw-canary") == env["base_sha"], 10, "the canary back on the old model")

