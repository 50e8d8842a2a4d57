"""The job's fleet path alone: how many heartbeats and indicator readings per second its keyed
Python operator (liveness, inventory, level crossings) keeps up with, and at what CPU cost.

No broker and no bridge: a writer thread drops spool files (what the bridges write) every
``--flush-ms`` with the heartbeats of ``--gateways`` gateways, each every ``--heartbeat-s``,
and (with ``--indicators-s``) one sensor's indicator reading per gateway at that interval,
all stamped with the wall clock as the bridge would (``recv_ms``). A fresh job in a local
mini-cluster reads them. Every second the benchmark samples the fleet's lag: the wall clock
minus the newest ``last_seen_ms`` the job has stored for any gateway (spool, proc-time
batching, the keyed operator, the store batch). The lag adds one for one to the time a
silent gateway takes to be reported offline, so a fleet that keeps up shows a flat lag of
a few seconds, one that does not a growing one.

Reported: records/s offered, lag p50 / max over the second half of the run, and the job's
CPU seconds per 1,000 records (client, JVM, Python workers; the per-core figure that carries
over from a shared machine, where the wall-clock figures do not).

    .venv/bin/python benchmarks/fleet_operator.py --gateways 2000 --heartbeat-s 5 --indicators-s 20 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgevib.cloud.config import load_config
from edgevib.cloud.flink.runner import JobProcess
from edgevib.cloud.ingest.records import dumps_line, normalize
from edgevib.cloud.store import Store

from edgevib.protocol import dumps, make_heartbeat, make_indicators
from edgevib.testing import wait_until

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the sibling benchmark module (cloud_throughput)
    sys.path.insert(0, str(ROOT))


def _templates(gateways: int) -> tuple[list[bytes], list[bytes]]:
    """One validated spool line per gateway and kind, made the real way (protocol + bridge
    normalisation), with the times as placeholders the writer replaces."""
    hbs, inds = [], []
    for g in range(gateways):
        site, gw = f"site{g % 10:02d}", f"gw{g:05d}"
        hb = make_heartbeat(site=site, gateway=gw, t_ns=1, uptime_s=1.0,
                            model={"name": "faulttype", "version": "1", "sha256": "0" * 64},
                            sensors={"de": {"frames": 1}}, drops={}, counters={}, resources={}, outbox_pending=0,
                            agent_version="bench")
        rec = normalize(f"edgevib/v1/{site}/{gw}/heartbeat", dumps(hb), 1, "MIDX")
        rec.update(ev_ms=111111111, recv_ms=222222222)
        hbs.append(dumps_line(rec))
        ind = make_indicators(site=site, gateway=gw, sensor="de", t_ns=1, duration_s=1.0, sample_rate=12000.0,
                              acc_rms_g=0.1, acc_peak_g=0.4, crest=4.0, kurtosis=3.1, vel_rms_mm_s=1.5,
                              iso_zone="A", iso_group=2, iso_foundation="rigid",
                              env_db={"bpfo": 1.0, "bpfi": 0.5, "bsf2": 0.2, "ftf": 0.1}, rpm=1750.0,
                              rpm_source="configured")
        rec = normalize(f"edgevib/v1/{site}/{gw}/indicators", dumps(ind), 1, "MIDX")
        assert rec["kind"] != "dead", rec
        rec.update(ev_ms=111111111, recv_ms=222222222)
        inds.append(dumps_line(rec))
    return hbs, inds


class SpoolWriter(threading.Thread):
    """Heartbeats (and indicator readings) of every gateway at their intervals, one spool file per flush."""

    def __init__(self, spool: Path, gateways: int, heartbeat_s: float, indicators_s: float, flush_ms: int) -> None:
        super().__init__(daemon=True)
        self.spool, self.flush_s = spool, flush_ms / 1000
        self.hbs, self.inds = _templates(gateways)
        self.heartbeat_s, self.indicators_s = heartbeat_s, indicators_s
        now = time.time()
        # spread over the interval, as real gateways are
        self.next_hb = [now + heartbeat_s * g / gateways for g in range(gateways)]
        self.next_ind = [now + indicators_s * g / gateways for g in range(gateways)] if indicators_s > 0 else []
        self.written = 0
        self.stop_ = threading.Event()
        self.k = 0

    def run(self) -> None:
        while not self.stop_.wait(self.flush_s):
            now = time.time()
            ms = b"%d" % int(now * 1000)
            lines: list[bytes] = []
            for g, due in enumerate(self.next_hb):
                if due <= now:
                    self.next_hb[g] = due + self.heartbeat_s
                    lines.append(self.hbs[g].replace(b"MIDX", b"m-%d" % (self.written + len(lines)))
                                 .replace(b"111111111", ms).replace(b"222222222", ms))
            for g, due in enumerate(self.next_ind):
                if due <= now:
                    self.next_ind[g] = due + self.indicators_s
                    lines.append(self.inds[g].replace(b"MIDX", b"m-%d" % (self.written + len(lines)))
                                 .replace(b"111111111", ms).replace(b"222222222", ms))
            if lines:
                tmp = self.spool / f".{self.k:08d}.tmp"
                tmp.write_bytes(b"".join(lines))
                # the bridge's atomic hand-over: the job never lists a half-written file
                os.replace(tmp, self.spool / f"{time.strftime('%Y%m%dT%H%M%S')}-bench-{self.k:08d}.csv")
                self.k += 1
                self.written += len(lines)


def run(gateways: int, heartbeat_s: float, indicators_s: float, seconds: float, flush_ms: int,
        offline_after_s: float) -> dict[str, Any]:
    from benchmarks.cloud_throughput import _group_cpu_s  # noqa: PLC0415 - needs ROOT on sys.path

    tmp = Path(tempfile.mkdtemp(prefix="edgevib-fleetop-"))
    cfg = load_config(None, env={}, overrides={
        "broker_url": "mqtt://127.0.0.1:1", "store_url": f"sqlite:///{tmp}/store.db", "spool_dir": str(tmp / "spool"),
        "checkpoint_dir": str(tmp / "ckpt"),
        "job": {"offline_after_s": offline_after_s, "checkpoint_interval_ms": 2000}})
    Path(cfg.spool_dir).mkdir(parents=True)
    job = JobProcess(cfg, tmp / "job")
    job.start(restore="")
    store = Store(cfg.store_url)
    writer = SpoolWriter(Path(cfg.spool_dir), gateways, heartbeat_s, indicators_s, flush_ms)
    writer.start()
    lags: list[tuple[float, float]] = []
    try:
        # JVM start and the first backlog: until the job stores most gateways
        wait_until(lambda: (job.check(), store.query("SELECT COUNT(*) FROM gateways")[0][0] >= gateways // 2)[1],
                   timeout=300, interval=0.5, what="the job to store gateways")
        settle = time.time() + 10
        while time.time() < settle:
            job.check()
            time.sleep(0.5)
        cpu0, n0, t0 = _group_cpu_s(job), writer.written, time.time()
        while (now := time.time()) < t0 + seconds:
            job.check()
            newest = store.query("SELECT MAX(last_seen_ms) FROM gateways")[0][0] or 0
            lags.append((now - t0, now - newest / 1000))
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        cpu_s, n = _group_cpu_s(job) - cpu0, writer.written - n0
    finally:
        writer.stop_.set()
        writer.join(5)
        job.stop()
        store.close()
    half = [lag for t, lag in lags if t >= seconds / 2]
    return {"gateways": gateways, "heartbeat_s": heartbeat_s, "indicators_s": indicators_s,
            "records_per_s": n / seconds, "lag_p50_s": statistics.median(half), "lag_max_s": max(half),
            "lag_first_s": lags[0][1], "lag_last_s": lags[-1][1],
            "cpu_s_per_1000": 1000 * cpu_s / max(n, 1), "job_cpu_share": cpu_s / seconds,
            "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateways", type=int, default=2000)
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument("--indicators-s", type=float, default=20.0, help="0: no indicator readings")
    p.add_argument("--seconds", type=float, default=60.0, help="measured, after start-up and 10 s of settling")
    p.add_argument("--flush-ms", type=int, default=500, help="a spool file every this many ms (a bridge's flush_ms)")
    p.add_argument("--offline-after-s", type=float, default=20.0)
    a = p.parse_args(argv)
    r = run(a.gateways, a.heartbeat_s, a.indicators_s, a.seconds, a.flush_ms, a.offline_after_s)
    print(f"fleet operator: {r['gateways']} gateways, heartbeat every {r['heartbeat_s']} s, indicators every "
          f"{r['indicators_s']} s -> {r['records_per_s']:.0f} records/s offered")
    print(f"  lag (wall clock - newest stored last_seen): p50 {r['lag_p50_s']:.1f} s, max {r['lag_max_s']:.1f} s "
          f"over the second half; first {r['lag_first_s']:.1f} s, last {r['lag_last_s']:.1f} s")
    print(f"  job CPU: {r['cpu_s_per_1000']:.2f} s per 1,000 records ({r['job_cpu_share']:.2f} cores); "
          f"load {r['load']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
