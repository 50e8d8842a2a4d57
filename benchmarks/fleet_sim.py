"""Issue 18: a simulated fleet of thousands of gateways through the whole cloud path.

One process simulates ``--gateways`` gateways over ``--clients`` MQTT connections (each
connection publishes the topics of its share of the gateways; one connection per gateway
would cost far more than it tests): a heartbeat every ``--heartbeat-s``, one sensor's
condition indicators every ``--indicators-s``, alerts at ``--alert-rate`` per second over
the fleet, all at QoS 1 (an agent sends indicators at QoS 0; QoS 1 here so every one can be
counted). At ``--stop-at`` (a fraction of the run) ``--stop-frac`` of the gateways go
silent. A private Mosquitto, ``--bridges`` bridge processes sharing the load
(``bridge.share_group``; unless ``--no-kill`` one is SIGKILLed at 20 % of the run and
restarted under its client id at 25 %: Mosquitto holds its share of the traffic meanwhile,
so heartbeat gaps grow by its downtime and ``offline_after_s`` must cover heartbeat interval
+ downtime + pipeline delay), and the Flink job (:class:`JobProcess`) carry it
to a SQLite store.

Checks, printed as JSON with ``uptime``:

* liveness: every silent gateway offline (``fleet`` events on MQTT and the store),
  detected ``offline_s`` after its last heartbeat (p50/p99/max, against
  ``job.offline_after_s``); no running gateway ever reported offline;
* nothing lost: alerts and indicators in the store = published (by id; the broker's
  redeliveries after the bridge kill are duplicates the store removes).

    .venv/bin/python benchmarks/fleet_sim.py [--gateways 2000] [--seconds 180]

tests/cloud/test_fleet_sim.py runs :func:`run_fleet` for a minute and asserts the checks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevib.cloud.config import load_config
from edgevib.cloud.flink.runner import JobProcess
from edgevib.cloud.testing import BridgeProcess

from edgevib.broker import MosquittoProcess
from edgevib.protocol import Topics, dumps, make_alert, make_heartbeat, make_indicators

FAULTS = ("B007", "IR014", "OR021")
SEVERITY = {"007": "info", "014": "warning", "021": "critical"}
CAUGHT_UP_S = 5.0  # start-up backlog drained: the newest stored heartbeat sighting is this recent


@dataclass
class FleetResult:
    gateways: int
    seconds: float
    published: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    silent: int = 0
    offline_detected: int = 0
    offline_s: dict[str, float] = field(default_factory=dict)  # p50/p99/max
    false_offline: list[str] = field(default_factory=list)  # running gateways reported offline after warm-up (20)
    false_offline_n: int = 0
    # seconds after the start of the run of those reports: [first, last], and how many fell
    # outside the bridge kill's disturbance (kill .. restart + offline_after_s + 10 s)
    false_offline_s: list[float] = field(default_factory=list)
    false_offline_outside_kill: int = 0
    kill_s: list[float] = field(default_factory=list)  # [killed, restarted] s after the start of the run
    warmup_offline: int = 0  # offline events before the run proper (the starting job's backlog; not judged)
    status_wrong: list[str] = field(default_factory=list)
    store_offline: int = 0
    publish_rate: float = 0.0
    drain_s: float = 0.0
    startup_s: float = 0.0
    caught_up_s: float = 0.0  # job start -> its newest stored sighting within CAUGHT_UP_S of now
    bridge_killed: bool = False
    uptime: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[int(q * (len(xs) - 1))], 2) if xs else -1.0


class Fleet:
    """The simulated gateways: ``tick(now)`` publishes whatever is due."""

    def __init__(self, broker_port: int, n: int, clients: int, heartbeat_s: float, indicators_s: float,
                 alert_rate: float, seed: int = 0) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self.rng = random.Random(seed)
        self.names = [(f"site{g % 20:02d}", f"gw{g:05d}") for g in range(n)]
        self.topics = [Topics(s, g) for s, g in self.names]
        self.heartbeat_s, self.indicators_s, self.alert_rate = heartbeat_s, indicators_s, alert_rate
        t0 = time.time()
        # Spread each gateway's schedule over its period so the load is even.
        self.next_hb = [t0 + self.rng.random() * heartbeat_s for _ in range(n)]
        self.next_ind = [t0 + self.rng.random() * indicators_s for _ in range(n)]
        self.last_hb = [0.0] * n
        self.silent: set[int] = set()
        self.alert_ids: set[str] = set()
        self.indicator_keys: set[tuple[str, str, str, int]] = set()
        self.counts = {"heartbeat": 0, "indicators": 0, "alerts": 0}
        self._alert_debt = 0.0
        self._last_tick = t0
        self.clients = []
        for i in range(clients):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-sim-{i}")
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.connect("127.0.0.1", broker_port, keepalive=60)
            c.loop_start()
            self.clients.append(c)
        self.infos: list[Any] = []

    def _pub(self, g: int, topic: str, doc: dict[str, Any]) -> None:
        info = self.clients[g % len(self.clients)].publish(topic, dumps(doc), qos=1)
        self.infos.append(info)

    def tick(self, now: float, heartbeats_only: bool = False) -> None:
        for g in range(len(self.names)):
            if g in self.silent:
                continue
            site, gw = self.names[g]
            if now >= self.next_hb[g]:
                self.next_hb[g] += self.heartbeat_s
                self._pub(g, self.topics[g].heartbeat, make_heartbeat(
                    site=site, gateway=gw, t_ns=int(now * 1e9), uptime_s=now - self._last_tick,
                    model={"name": "faulttype", "version": "1", "sha256": "0" * 64}, sensors={"de": {"frames": 1}},
                    drops={}, counters={}, resources={}, outbox_pending=0, agent_version="fleet-sim"))
                self.last_hb[g] = now
                self.counts["heartbeat"] += 1
            if now >= self.next_ind[g] and not heartbeats_only:
                self.next_ind[g] += self.indicators_s
                t_ns = int(now * 1e9)
                doc = make_indicators(
                    site=site, gateway=gw, sensor="de", t_ns=t_ns, duration_s=1.0, sample_rate=12000.0,
                    acc_rms_g=0.1 + self.rng.random() * 0.05, acc_peak_g=0.4, crest=4.0, kurtosis=3.1,
                    vel_rms_mm_s=1.0 + self.rng.random(), iso_zone="A", iso_group=2, iso_foundation="rigid",
                    env_db={"bpfo": 1.0, "bpfi": 0.5, "bsf2": 0.2, "ftf": 0.1}, rpm=1750.0, rpm_source="configured")
                self._pub(g, self.topics[g].indicators, doc)
                self.indicator_keys.add((site, gw, "de", t_ns))
                self.counts["indicators"] += 1
        self._alert_debt += 0.0 if heartbeats_only else self.alert_rate * (now - self._last_tick)
        self._last_tick = now
        live = [g for g in range(len(self.names)) if g not in self.silent]
        while self._alert_debt >= 1 and live:
            self._alert_debt -= 1
            g = self.rng.choice(live)
            site, gw = self.names[g]
            cls = self.rng.choice(FAULTS)
            a = make_alert(site=site, gateway=gw, sensor="de", kind="fault", state="raised",
                           t_ns=time.time_ns(), cls=cls, probability=0.9, physics=cls[:2].rstrip("0123456789"),
                           agree=True, severity=SEVERITY[cls[-3:]])
            self._pub(g, self.topics[g].alerts, a)
            self.alert_ids.add(a["id"])
            self.counts["alerts"] += 1

    def drain(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        for info in self.infos:
            info.wait_for_publish(max(0.1, end - time.monotonic()))
        self.infos.clear()

    def close(self) -> None:
        for c in self.clients:
            c.loop_stop()
            c.disconnect()


def run_fleet(workdir: Path, *, gateways: int = 2000, seconds: float = 180.0, clients: int = 8,
              heartbeat_s: float = 5.0, indicators_s: float = 10.0, alert_rate: float = 10.0,
              stop_frac: float = 0.02, stop_at: float = 0.5, offline_after_s: float = 30.0, bridges: int = 2,
              kill_bridge: bool = True, kill_at: float = 0.2, restart_at: float = 0.25,
              log: Any = print) -> FleetResult:
    """Run the fleet against a fresh broker, bridges, job and store in ``workdir``."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from edgevib.cloud.store import Store  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    if seconds * (1 - stop_at) < offline_after_s + 10:
        raise ValueError(f"fleet: seconds={seconds} leaves under offline_after_s + 10 s after stop_at={stop_at}; "
                         "run longer or stop earlier")
    workdir = Path(workdir)
    broker = MosquittoProcess(max_queued=1_000_000)
    broker.start()
    cfg = load_config(None, env={}, overrides={
        "broker_url": broker.url, "store_url": f"sqlite:///{workdir}/store.db", "spool_dir": str(workdir / "spool"),
        "checkpoint_dir": str(workdir / "checkpoints"),
        # 500 ms batches: fewer spool files (each is a split the job lists, opens and remembers)
        "bridge": {"flush_ms": 500},
        "job": {"offline_after_s": offline_after_s, "checkpoint_interval_ms": 2000}})
    res = FleetResult(gateways, seconds)
    events: list[tuple[float, dict[str, Any]]] = []
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-listener")
    listener.on_message = lambda c, u, m: events.append((time.time(), json.loads(m.payload)))
    listener.on_connect = lambda c, u, f, r, p: c.subscribe(cfg.fleet_topic, qos=1)
    listener.connect("127.0.0.1", broker.port)
    listener.loop_start()
    procs = [BridgeProcess(cfg, workdir / "bridges", f"bridge-{i}", "bridges" if bridges > 1 else "")
             for i in range(bridges)]
    job = JobProcess(cfg, workdir / "job")
    fleet: Fleet | None = None
    store: Store | None = None
    try:
        for b in procs:
            b.start()
        job.start()
        t_start = time.time()
        fleet = Fleet(broker.port, gateways, clients, heartbeat_s, indicators_s, alert_rate)
        store = Store(cfg.store_url)
        # Heartbeats from the first second; wait until the job stores gateways (JVM start).
        t_wait = time.time() + 180
        while time.time() < t_wait:
            fleet.tick(time.time())
            job.check()
            if store.query("SELECT COUNT(*) FROM gateways")[0][0] >= gateways // 2:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("fleet: the job stored no gateways in 180 s; see " + str(job.log_path))
        # Settle: gateways whose first heartbeats met the starting job's backlog flap
        # offline/online once; that storm (each event is a store transaction and an MQTT
        # publish) must be over before liveness is judged. It lasts until the job has caught up
        # with its start-up backlog (the newest stored sighting within CAUGHT_UP_S of now: on a
        # VM a third as fast that took ~70 s past the first stored gateways), then
        # offline_after_s + 10 s more.
        settle_end = time.time() + 180 + offline_after_s + 10
        caught_up, next_look = False, 0.0
        while (now := time.time()) < settle_end:
            fleet.tick(now)
            job.check()
            if not caught_up and now >= next_look:
                next_look = now + 1.0
                newest = store.query("SELECT MAX(last_seen_ms) FROM gateways")[0][0] or 0
                if now * 1000 - newest <= CAUGHT_UP_S * 1000:
                    caught_up, settle_end = True, now + offline_after_s + 10
                    res.caught_up_s = round(now - t_start, 1)
            time.sleep(max(0.0, 0.1 - (time.time() - now)))
        if not caught_up:
            raise RuntimeError(f"fleet: the job did not catch up with its start-up backlog in 180 s; see {job.log_path}")
        log(f"fleet: job up, {gateways} gateways publishing for {seconds:.0f} s")
        t0 = time.time()
        n_silent = int(round(gateways * stop_frac))
        silent = set(fleet.rng.sample(range(gateways), n_silent))
        killed = restarted = False
        t_silent = t0 + seconds
        sent_before = sum(fleet.counts.values())
        while (now := time.time()) < t0 + seconds:
            frac = (now - t0) / seconds
            if frac >= stop_at and not fleet.silent:
                fleet.silent = silent
                t_silent = now
                log(f"fleet: {n_silent} gateways silent from now")
            if kill_bridge and bridges > 1 and frac >= kill_at and not killed:
                procs[-1].kill()
                killed = res.bridge_killed = True
                res.kill_s = [round(now - t0, 1)]
                log("fleet: bridge SIGKILLed")
            if killed and not restarted and frac >= restart_at:
                procs[-1].start()
                restarted = True
                res.kill_s.append(round(time.time() - t0, 1))
                log("fleet: bridge restarted under its client id")
            fleet.tick(now)
            if len(fleet.infos) > 20_000:
                fleet.infos = [i for i in fleet.infos if not i.is_published()]
            job.check()
            time.sleep(max(0.0, 0.1 - (time.time() - now)))
        res.publish_rate = round((sum(fleet.counts.values()) - sent_before) / seconds, 1)
        fleet.drain()
        res.published = {"alerts": len(fleet.alert_ids), "indicators": len(fleet.indicator_keys),
                         "heartbeats": fleet.counts["heartbeat"]}
        # Everything published must reach the store; the job keeps up or this times out. The
        # live gateways go on heartbeating meanwhile, as live gateways do: a pause longer than
        # offline_after_s (a slow job's drain) would make them all silent at once.
        t_drain = time.time()
        t_end = t_drain + 180
        while (now := time.time()) < t_end:
            fleet.tick(now, heartbeats_only=True)
            job.check()
            res.stored = {"alerts": store.query("SELECT COUNT(*) FROM alerts")[0][0],
                          "indicators": store.query("SELECT COUNT(*) FROM indicators")[0][0]}
            if res.stored["alerts"] >= res.published["alerts"] and \
                    res.stored["indicators"] >= res.published["indicators"]:
                break
            time.sleep(max(0.0, 0.1 - (time.time() - now)))
        res.stored["alerts_distinct"] = store.query("SELECT COUNT(DISTINCT id) FROM alerts")[0][0]
        res.drain_s = round(time.time() - t_drain, 1)  # after the last publish until all was stored
        res.startup_s = round(t0 - t_start, 1)
        names = fleet.names
        silent_keys = {f"{names[g][0]}/{names[g][1]}" for g in silent}

        def detected() -> set[str]:
            return {f"{e.get('site')}/{e.get('gateway')}" for t, e in list(events)
                    if e.get("type") == "offline" and t >= t_silent}

        # The job judges silence on what it has heard (FleetLogic.liveness_clock), so the live
        # gateways keep heartbeating (nothing else) until every silent one is reported or
        # offline_after_s + 20 s more have passed.
        t_live_end = time.time() + offline_after_s + 20
        while (now := time.time()) < t_live_end and not silent_keys <= detected():
            fleet.tick(now, heartbeats_only=True)
            job.check()
            time.sleep(max(0.0, 0.1 - (time.time() - now)))
        fleet.drain()
        res.silent = len(silent_keys)
        first_off: dict[str, float] = {}  # after warm-up: silent ones after they went silent
        for t, e in list(events):
            if e.get("type") != "offline":
                continue
            key = f"{e.get('site')}/{e.get('gateway')}"
            if t < t0:
                res.warmup_offline += 1
            elif key not in silent_keys:
                first_off.setdefault(key, t)
                res.false_offline_n += 1
                rel = t - t0
                res.false_offline_s = [min(res.false_offline_s[0], rel), max(res.false_offline_s[1], rel)] \
                    if res.false_offline_s else [rel, rel]
                if not (len(res.kill_s) == 2 and res.kill_s[0] <= rel <= res.kill_s[1] + offline_after_s + 10):
                    res.false_offline_outside_kill += 1
            elif t >= t_silent:
                first_off.setdefault(key, t)
        lag = [first_off[f"{names[g][0]}/{names[g][1]}"] - fleet.last_hb[g] for g in silent
               if f"{names[g][0]}/{names[g][1]}" in first_off]
        res.offline_detected = len(lag)
        res.offline_s = {"p50": _pct(lag, 0.5), "p99": _pct(lag, 0.99), "max": _pct(lag, 1.0),
                         "configured": offline_after_s}
        res.false_offline = sorted(set(first_off) - silent_keys)[:20]
        res.false_offline_s = [round(x, 1) for x in res.false_offline_s]
        gw = store.gateways()
        res.store_offline = sum(1 for k in silent_keys if gw.get(k, {}).get("status") == "offline")
        res.status_wrong = sorted(k for k in (f"{s}/{g}" for s, g in names)
                                  if gw.get(k, {}).get("status") != ("offline" if k in silent_keys else "online"))[:20]
        res.uptime = os.popen("uptime").read().strip()
        return res
    finally:
        if fleet is not None:
            fleet.close()
        if store is not None:
            store.close()
        job.stop()
        for b in procs:
            b.stop()
        listener.loop_stop()
        listener.disconnect()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--heartbeat-s", type=float, default=5.0, help="the agent's default heartbeat_s")
    ap.add_argument("--indicators-s", type=float, default=10.0, help="the agent's default indicators.interval_s")
    ap.add_argument("--alert-rate", type=float, default=10.0)
    ap.add_argument("--stop-frac", type=float, default=0.02)
    ap.add_argument("--stop-at", type=float, default=0.5, help="fraction of the run when they go silent")
    ap.add_argument("--offline-after-s", type=float, default=30.0, help="the job's default offline_after_s")
    ap.add_argument("--bridges", type=int, default=2)
    ap.add_argument("--no-kill", action="store_true", help="do not SIGKILL a bridge mid-run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgevib-fleet-") as d:
        res = run_fleet(Path(d), gateways=args.gateways, seconds=args.seconds, clients=args.clients,
                        heartbeat_s=args.heartbeat_s, indicators_s=args.indicators_s, alert_rate=args.alert_rate,
                        stop_frac=args.stop_frac, stop_at=args.stop_at, offline_after_s=args.offline_after_s, bridges=args.bridges,
                        kill_bridge=not args.no_kill)
    print(json.dumps(res.as_dict(), indent=1))


if __name__ == "__main__":
    main()
