"""Trigger -> adapted, gated, signed model running on the agent (issue 16). Prints a report.

The closed loop of the default model, timed from the moment the retrain trigger exists to the
agent's ``model_status: installed`` for the adapted model, with a breakdown:

* a private Mosquitto; ``edgevib agent`` (a process, the packaged fault-type model) for one
  machine with CWRU's drive-end bearing; the evidence collector writing the store and dataset;
* the real CWRU recording ``B021_load3`` (a 0.021" ball fault the fleet model calls IR) is
  replayed at 4x real time; the agent raises the (wrong) alert and uploads 40 evidence windows;
* the alert is labelled ``B021`` (:func:`~edgevib.cloud.learning.labels.label_alert`) and the
  trigger is made from that label by :meth:`~edgevib.cloud.flink.fleet.FleetLogic.on_label`, the
  code the Flink job runs (the job itself is not started: its share ends where the trigger
  row exists, before the measured span; ``tests/cloud/test_closed_loop.py`` runs it for real);
* **trigger ->** the retrain worker (``retrain.arch = faulttype``, ``--method``; default ``rkd``,
  the method kept in docs/adapt.md) reads the labelled windows, computes their order features,
  adapts the running model on the fleet base + those windows, scores both models on the fixed
  fleet set and the site's held-out windows (the gate), signs the candidate into the registry
  and pushes it; the agent verifies the signature, shadow-runs and swaps: **-> running**.

``--repeat`` runs the whole loop that many times per method, each with a fresh agent and
registry (the agent starts from the fleet model each time).

    .venv/bin/python benchmarks/closed_loop.py [--methods rkd finetune] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from edgevib.broker import MosquittoProcess
from edgevib.testing import wait_until

SITE, GW, SENSOR = "bench", "gw", "pump"
LABELLED = "B021_load3_12k_DE_225.npz"
NAME = "faulttype-lr"  # the packaged default model, as the agent names it


def one_loop(method: str, d: Path, url: str, base: Path, rec: Any) -> dict[str, Any]:
    """One trigger -> running span (its own agent, registry, collector and store); the seconds of each step."""
    from edgevib.cloud.config import load_config
    from edgevib.cloud.flink.fleet import FleetLogic
    from edgevib.cloud.ingest.collector import Collector
    from edgevib.cloud.learning.dataset import EvidenceStore
    from edgevib.cloud.learning.labels import label_alert
    from edgevib.cloud.learning.retrain import RetrainConfig, Worker
    from edgevib.cloud.store import Store
    from edgevib.edge.cli import model_path
    from edgevib.edge.mqtt import MqttLink
    from edgevib.edge.stream import stream_recording
    from edgevib.models.registry import Registry, keygen

    from edgevib import protocol as proto

    priv, pub = keygen(d / "keys")
    registry = Registry(d / "registry", private_key=priv)
    registry.add(model_path(""), name=NAME, version="1")
    topics = proto.Topics(SITE, GW)
    conf = d / "agent.toml"
    conf.write_text(f'[sensors.{SENSOR}]\nbearing = "cwru-de-6205"\nrpm = {rec.rpm}\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEVIB_ALERT__COOLDOWN_S": "0", "EDGEVIB_ALERT__N": "10",
           "EDGEVIB_ALERT__K": "6", "EDGEVIB_EVIDENCE__ENABLED": "true", "EDGEVIB_EVIDENCE__ALERT_WINDOWS": "40",
           "EDGEVIB_EVIDENCE__PER_MINUTE": "600", "EDGEVIB_UPDATE__PUBLIC_KEY": str(pub),
           "EDGEVIB_UPDATE__MODEL_DIR": str(d / "agent-models")}
    cfg = load_config(None, env={}, overrides={
        "broker_url": url, "store_url": f"sqlite:///{d}/store.db", "spool_dir": str(d / "spool"),
        "evidence": {"dataset_dir": str(d / "dataset"), "client_id": f"bench-collector-{d.name}"}})
    collector = Collector(cfg)
    collector.start()
    store = Store(cfg.store_url)
    ev = EvidenceStore(store, cfg.evidence.dataset_dir)
    agent = subprocess.Popen([sys.executable, "-m", "edgevib.cli", "-q", "agent", "--broker", url, "--site", SITE,
                              "--gateway", GW, "--config", str(conf), "--outbox", str(d / "outbox.db"),
                              "--heartbeat", "0.5"], env=env)
    listen = MqttLink(url, f"bench-listen-{d.name}", reconnect=(1, 1), connect=False)
    listen.subscribe(f"{topics.base}/#")
    listen.start()
    alerts: list[dict[str, Any]] = []
    status: list[tuple[float, dict[str, Any]]] = []
    heartbeats: list[bytes] = []

    def pump() -> Literal[False]:
        """Take what arrived; False, so that ``pump() or cond`` waits on ``cond``."""
        while (m := listen.poll(0.0)) is not None:
            if m.topic == topics.heartbeat:
                heartbeats.append(m.payload)
            elif m.topic == topics.alerts:
                alerts.append(proto.parse_alert(m.payload))
            elif m.topic == topics.model_status:
                status.append((time.monotonic(), json.loads(m.payload)))
        return False

    def alive() -> None:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited ({agent.returncode})")

    try:
        wait_until(lambda: listen.wait_connected(0.1), 30, "the listener", alive)
        tx = MqttLink(url, f"bench-tx-{d.name}", reconnect=(1, 1))
        assert tx.wait_connected(10)
        wait_until(lambda: pump() or heartbeats, 60, "the agent's first heartbeat", alive)
        stream_recording(tx, topics, SENSOR, rec, rate=4.0)
        tx.close()
        first = wait_until(lambda: pump() or [a for a in alerts if a["kind"] == "fault" and a["state"] == "raised"],
                           60, "a fault alert", alive)[0]
        def evidence() -> list[dict[str, Any]]:
            rows = ev.for_alert(first["id"])
            return rows if len(rows) >= 40 else []

        rows = wait_until(evidence, 120, "40 evidence windows", alive)
        doc = label_alert(store, ev, first["id"], "B021", by="bench")
        lb = {"id": doc["alert_id"], "site": SITE, "gateway": GW, "cls": "B021", "n": doc["n_windows"],
              "ev_ms": int(time.time() * 1000), "model_name": NAME}
        _, out = FleetLogic(offline_after_ms=30_000, incident_k=2, incident_window_ms=10_000, resolve_ms=5000,
                            retrain_min_windows=12).on_label(None, f"model:{NAME}", lb)
        (trig,) = [r for k, _, r in out if k == "retrain_trigger"]
        store.upsert("retrain_triggers", [trig])
        t_trigger = time.monotonic()
        worker = Worker(RetrainConfig(base=str(base), registry=str(d / "registry"), private_key=str(priv),
                                      arch="faulttype", method=method, push_timeout_s=120, push_to="trigger"),
                                      store, ev,
                        broker_url=url)
        (res,) = worker.run_pending()
        t_worker = time.monotonic()
        if res.status != "promoted":
            raise RuntimeError(f"{method}: {res.status}: {res.decision}")
        sha = registry.get(NAME, res.version).manifest.sha256
        t_run = wait_until(lambda: pump() or [t for t, s in status if s.get("result") == "installed"
                                              and s.get("sha256") == sha], 60, "model_status installed", alive)[0]
        return {"method": method, "misnamed_as": first["class"], "evidence_windows": len(rows),
                "trigger_to_running_s": t_run - t_trigger, "worker_s": t_worker - t_trigger,
                "steps_s": res.seconds, "gate": {k: res.metrics[k] for k in ("old_holdout", "new_holdout", "old_new",
                                                                            "new_new")},
                "n_params": res.metrics["n_params"], "onnx_bytes": res.metrics["onnx_bytes"]}
    finally:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                agent.kill()
        listen.close()
        collector.stop()
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cwru", type=Path, default=Path("../shared/cwru"))
    ap.add_argument("--bearings", type=Path, default=Path("../shared/bearings"))
    ap.add_argument("--methods", nargs="+", default=["rkd"], choices=["finetune", "rkd", "mlp", "ke"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from edgevib.models.data import load_recording

    from edgevib.cli import main as cli

    d = Path(tempfile.mkdtemp(prefix="edgevib-bench-loop-"))
    broker = MosquittoProcess()
    broker.start()
    runs: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        base = d / "ft-base.npz"
        assert cli(["-q", "cloud", "base", "--arch", "faulttype", "--data", str(args.cwru), str(args.bearings),
                    "--out", str(base)]) == 0
        print(f"fleet base (edgevib cloud base --arch faulttype, once): {time.perf_counter() - t0:.1f} s")
        rec = load_recording(args.cwru / LABELLED)
        for method in args.methods:
            for i in range(args.repeat):
                r = one_loop(method, d / f"{method}-{i}", broker.url, base, rec)
                runs.append(r)
                s = r["steps_s"]
                print(f"{method:<8} run {i}: trigger -> running {r['trigger_to_running_s']:5.1f} s  "
                      f"(worker {r['worker_s']:.1f} s: data {s['data']:.1f}, adapt {s['train']:.1f}, "
                      f"gate {s['evaluate']:.2f}, sign + push + agent verify/shadow/swap {s['push']:.1f}); "
                      f"misnamed as {r['misnamed_as']}, gate fleet {r['gate']['old_holdout']:.1f} -> "
                      f"{r['gate']['new_holdout']:.1f} %, site {r['gate']['old_new']:.1f} -> "
                      f"{r['gate']['new_new']:.1f} %; {r['n_params']} params, {r['onnx_bytes']} B")
        for method in args.methods:
            t = [r["trigger_to_running_s"] for r in runs if r["method"] == method]
            print(f"{method:<8} trigger -> running: median {statistics.median(t):.1f} s, max {max(t):.1f} s "
                  f"over {len(t)} run(s) (target <= 120 s)")
        print(f"uptime: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (load 1/5/15 min), "
              f"{os.cpu_count()} CPUs")
        if args.json:
            args.json.write_text(json.dumps(runs, indent=1))
    finally:
        broker.stop()
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
