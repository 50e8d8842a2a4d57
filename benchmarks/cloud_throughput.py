"""Cloud job benchmark: events/s through the job, and alert-to-store latency. Prints a report.

Two measurements, each with a fresh job in a local mini-cluster (run with the cloud venv):

* ``--mode spool``: N pre-validated records in F spool files (what the bridge writes) are
  read by a fresh job; rate = records / (last store write - first store write).
* ``--mode e2e``: simulated gateways publish alerts over real MQTT at each of ``--rate``
  (rising steps, one job) for ``--seconds``; latency = store write time - the alert's own
  timestamp (publish time), p50/p99 per step over the alerts after its first second.

Both print the job's CPU seconds (client, JVM, Python workers) and the load average: on a
shared machine, events per CPU second is the per-core figure that carries over.

    .venv-cloud/bin/python benchmarks/cloud_throughput.py --mode spool --records 200000 --files 100
    .venv-cloud/bin/python benchmarks/cloud_throughput.py --mode e2e --rate 250,1000,3000 --seconds 20

Targets: >= 30k events/s, p50 <= 0.5 s, p99 <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgevib.cloud.config import CloudConfig, load_config
from edgevib.cloud.flink.runner import JobProcess
from edgevib.cloud.ingest.records import dumps_line, normalize
from edgevib.cloud.store import Store

from edgevib.broker import MosquittoProcess
from edgevib.protocol import dumps, make_alert, make_heartbeat
from edgevib.testing import wait_until

FAULTS = ("B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007", "OR014", "OR021")


def _cfg(tmp: Path, broker_url: str = "mqtt://127.0.0.1:1883", parallelism: int = 1) -> CloudConfig:
    return load_config(None, env={}, overrides={
        "broker_url": broker_url, "store_url": f"sqlite:///{tmp}/store.db", "spool_dir": str(tmp / "spool"),
        "checkpoint_dir": str(tmp / "ckpt"), "bridge": {"client_id": f"bench-{time.time_ns()}", "flush_ms": 50},
        "job": {"window_s": 2, "out_of_orderness_s": 1.0, "checkpoint_interval_ms": 1000,
                "file_monitor_ms": 100, "offline_after_s": 30, "parallelism": parallelism}})


def bench_spool(records: int, files: int, gateways: int, alert_frac: float, parallelism: int = 1) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="edgevib-bench-"))
    cfg = _cfg(tmp, parallelism=parallelism)
    spool = Path(cfg.spool_dir)
    spool.mkdir(parents=True)
    rng = random.Random(1)
    t0_ns = time.time_ns() - records * 1_000_000  # 1 ms of event time per record, ending now
    per_file = records // files
    n_alerts = 0
    templates: dict[tuple[str, str], bytes] = {}

    def line(g: str, cls: str | None, k: int, t_ns: int) -> bytes:
        # One validated record per (gateway, class) made the real way (protocol + bridge
        # normalisation); the others copy it with their own id, mid and times (~1 us instead
        # of ~150 us a record, so a million records take seconds to write).
        tpl = templates.get((g, cls or ""))
        if tpl is None:
            if cls is None:
                doc = make_heartbeat(site="s1", gateway=g, t_ns=1, uptime_s=1.0, sensors={}, drops={},
                                     counters={}, resources={})
                topic = f"edgevib/v1/s1/{g}/heartbeat"
            else:
                doc = make_alert(site="s1", gateway=g, sensor="de", kind="fault", state="raised", t_ns=1,
                                 cls=cls, probability=0.9)
                topic = f"edgevib/v1/s1/{g}/alerts"
            rec = normalize(topic, dumps(doc), 1, "MIDX")
            assert rec["kind"] != "dead", rec
            rec.update(ev_ms=111111111, recv_ms=222222222, **({"id": "IDX"} if cls else {}))
            tpl = templates[(g, cls or "")] = dumps_line(rec)
        ms = t_ns // 1_000_000
        return (tpl.replace(b"MIDX", b"b-%d" % k).replace(b"IDX", b"a-%d" % k)
                .replace(b"111111111", b"%d" % ms).replace(b"222222222", b"%d" % ms))

    for f in range(files):
        lines = []
        for i in range(per_file):
            k = f * per_file + i
            alert = rng.random() < alert_frac
            n_alerts += alert
            lines.append(line(f"g{k % gateways}", rng.choice(FAULTS) if alert else None, k, t0_ns + k * 1_000_000))
        (spool / f"20000101T000000-bench-{f:08d}.csv").write_bytes(b"".join(lines))
    job = JobProcess(cfg, tmp / "job")
    t_start = time.time()
    job.start(restore="")
    store = Store(cfg.store_url)
    cpu: list[float] = []  # the job's CPU seconds at the first store write, and when all are stored
    try:
        def progress() -> bool:
            job.check()
            n = store.query("SELECT COUNT(*) FROM alerts")[0][0]
            if n > 0 and not cpu:
                cpu.append(_group_cpu_s(job))
            return bool(n >= n_alerts)

        wait_until(progress, timeout=900, interval=0.2, what="all alerts stored")
        cpu.append(_group_cpu_s(job))
        first, last = store.query("SELECT MIN(stored_ms), MAX(stored_ms) FROM alerts")[0]
    finally:
        job.stop()
        store.close()
    secs = (last - first) / 1000
    cpu_s = cpu[1] - cpu[0]
    return {"records": per_file * files, "alerts": n_alerts, "files": files, "seconds": secs,
            "events_per_s": per_file * files / secs if secs > 0 else float("inf"),
            "first_store_after_s": first / 1000 - t_start, "cpu_s": cpu_s,
            "events_per_cpu_s": per_file * files / cpu_s if cpu_s > 0 else float("inf")}


def _group_cpu_s(job: JobProcess) -> float:
    """CPU seconds (user + system) used so far by the job's process group: client, JVM, Python workers.

    Per-core throughput (events per CPU second) depends far less on what else runs on a shared
    machine than events per wall second do.
    """
    import psutil  # noqa: PLC0415

    assert job.proc is not None
    pgid = os.getpgid(job.proc.pid)
    total = 0.0
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                t = p.cpu_times()
                total += t.user + t.system
        except (psutil.Error, ProcessLookupError):
            pass
    return total


def bench_e2e(rates: list[float], seconds: float, gateways: int) -> list[dict[str, Any]]:
    """One job; alerts at each rate in turn for ``seconds`` (waiting for the store to catch up
    between steps); per step the published and stored rates and latency quantiles over the
    alerts published after the step's first second (the first step: after 3 s)."""
    from edgevib.cloud.ingest.bridge import Bridge
    from edgevib.cloud.testing import GatewaySim

    tmp = Path(tempfile.mkdtemp(prefix="edgevib-bench-"))
    broker = MosquittoProcess()
    broker.start()
    cfg = _cfg(tmp, broker.url)
    bridge = Bridge(cfg)
    bridge.start()
    job = JobProcess(cfg, tmp / "job")
    job.start(restore="")
    sims = [GatewaySim(broker.url, "s1", f"g{i}") for i in range(gateways)]
    store = Store(cfg.store_url)
    out: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        wait_until(lambda: (job.check(), sims[0].heartbeat(), len(store.gateways()) > 0)[2], timeout=180,
                   interval=1.0, what="job ready")

        def hb() -> None:
            while not stop.wait(0.5):
                for s in sims:
                    s.heartbeat(wait=False)

        threading.Thread(target=hb, daemon=True).start()
        rng = random.Random(2)
        n = 0
        for k, rate in enumerate(rates):
            cpu0 = _group_cpu_s(job)
            t0 = time.time()
            n0 = n
            while time.time() - t0 < seconds:
                target = n0 + int((time.time() - t0) * rate)
                while n < target:
                    sims[n % gateways].alert(rng.choice(FAULTS), wait=False)
                    n += 1
                time.sleep(0.002)
            t1 = time.time()
            def all_stored(n: int = n) -> bool:
                return bool(store.query("SELECT COUNT(*) FROM alerts")[0][0] >= n)

            wait_until(all_stored, timeout=300, interval=0.5, what="all alerts stored")
            cpu_s = _group_cpu_s(job) - cpu0
            rows = store.query("SELECT ev_ms, stored_ms FROM alerts WHERE ev_ms >= ? AND ev_ms < ? ORDER BY ev_ms",
                               (int((t0 + (3 if k == 0 else 1)) * 1000), int(t1 * 1000)))
            lat = sorted((st - ev) / 1000 for ev, st in rows)
            first, last = store.query("SELECT MIN(stored_ms), MAX(stored_ms) FROM alerts WHERE ev_ms >= ? AND ev_ms < ?",
                                      (int(t0 * 1000), int(t1 * 1000)))[0]
            q = statistics.quantiles(lat, n=100)
            out.append({"published": n - n0, "rate_target": rate, "published_rate": (n - n0) / (t1 - t0),
                        "stored_rate": (n - n0) / max((last - first) / 1000, 1e-3), "p50_s": q[49], "p99_s": q[98],
                        "max_s": lat[-1], "samples": len(lat), "job_cpu_s": cpu_s, "load": os.getloadavg()[0]})
    finally:
        stop.set()
        for s in sims:
            s.close()
        job.stop()
        bridge.stop()
        broker.stop()
        store.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("spool", "e2e"), default="spool")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--files", type=int, default=50)
    p.add_argument("--alert-frac", type=float, default=0.5)
    p.add_argument("--gateways", type=int, default=20)
    p.add_argument("--rate", default="250,1000,3000", help="alerts/s, or several comma-separated (one step each)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--parallelism", type=int, default=1, help="job.parallelism (the spool source stays at 1)")
    a = p.parse_args()
    if a.mode == "spool":
        r = bench_spool(a.records, a.files, a.gateways, a.alert_frac, a.parallelism)
        print(f"spool (parallelism {a.parallelism}): {r['records']} records ({r['alerts']} alerts) in {r['files']} files: "
              f"{r['events_per_s']:.0f} events/s over {r['seconds']:.1f} s "
              f"(first store write {r['first_store_after_s']:.1f} s after job start)  target >= 30000; "
              f"job CPU {r['cpu_s']:.1f} s = {r['events_per_cpu_s']:.0f} events per CPU second; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    else:
        for r in bench_e2e([float(x) for x in a.rate.split(",")], a.seconds, a.gateways):
            print(f"e2e: {r['published']} alerts at {r['rate_target']:.0f}/s target ({r['published_rate']:.0f}/s "
                  f"published), stored {r['stored_rate']:.0f}/s; alert-to-store latency p50 {r['p50_s']:.3f} s "
                  f"p99 {r['p99_s']:.3f} s max {r['max_s']:.3f} s ({r['samples']} samples; job CPU "
                  f"{r['job_cpu_s']:.1f} s, load average {r['load']:.1f} on {os.cpu_count()} CPUs)  "
                  "targets p50 <= 0.5 s, p99 <= 2 s")


if __name__ == "__main__":
    main()
