"""The edge agent: vibration frames in, confirmed and explained bearing-fault alerts out.

One worker thread does all the work: it takes readings (a sensor id and a frame's bytes)
from the source (edge/adapters/; by default the link's own bounded inbox), decodes frames
(bad ones are counted per reason and dropped), cuts per-sensor
windows, runs one batched model call for windows of *all* sensors (up to
``batch_size`` windows or ``batch_deadline_ms`` after the oldest one waited), feeds
each sensor's alert state machine and anomaly baseline, attaches envelope evidence to
every raised alert, stores alerts in the SQLite outbox *before* publishing them at
QoS 1, and deletes a row only on its PUBACK. Unacknowledged rows are published again,
in order, after a restart.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
from edgevib.edge import heap
from edgevib.edge.adapters import Reading, Source, TopicSource, rpm_topics
from edgevib.edge.alerting import Alerter, AlertEvent, AlertPolicy
from edgevib.edge.anomaly import AnomalyDetector
from edgevib.edge.collect import EvidenceSampler
from edgevib.edge.config import AgentConfig
from edgevib.edge.errors import EdgeError, OutboxError, OutboxFullError
from edgevib.edge.evidence import EvidenceConfig, analyze, window_stats
from edgevib.edge.indicators import compute as compute_indicators
from edgevib.edge.metrics import Metrics
from edgevib.edge.model import Model
from edgevib.edge.ota import ModelSlot, Updater
from edgevib.edge.outbox import PRIORITY_ALERT, Outbox
from edgevib.edge.replay import AckReplay
from edgevib.edge.shedding import Thinner
from edgevib.edge.sink import Sink
from edgevib.edge.source import Message
from edgevib.edge.source import Source as TopicLink
from edgevib.edge.speed import estimate_speed
from edgevib.edge.verdict import fuse
from edgevib.edge.windowing import SensorWindower
from edgevib.models.orders import FaultHz, fault_frequencies

from edgevib import __version__
from edgevib import protocol as proto
from edgevib.protocol.errors import FrameError, ProtocolError, WireError
from edgevib.protocol.frames import decode

log = logging.getLogger(__name__)
# a few bearings x a few speeds per gateway; an estimated speed moves in small steps
_cached_fault_hz = lru_cache(maxsize=4096)(fault_frequencies)
F32 = npt.NDArray[np.float32]
SPEED_HISTORY_S = 2.0  # signal each sensor keeps for the speed estimate and the indicators
EVIDENCE_HISTORY_S = 1.0  # ... and what an alert's evidence reads (all a sensor needs when neither runs)
# A sensor keeps the 2 s only from HISTORY_LEAD_S before its next speed estimate or indicator
# snapshot is due until that read is made; in between its ring is a window + RING_SLACK
# (~1 s: 24.6 kB of int16 at 12 kHz, not 48 kB). The short ring already holds ~1 s, so ~1 s
# of new signal fills the 2 s; the lead adds HISTORY_PLAN_S (how often this is planned) and
# a margin. With reads every 5 s (speed) and 10 s (indicators) a sensor holds 2 s ~40 % of
# the time instead of always (docs/edge_footprint.md).
HISTORY_LEAD_S = 1.5
HISTORY_PLAN_S = 0.25
# Heartbeat sensors[...]["rpm_source"] is a number (the heartbeat schema allows numbers only).
RPM_SOURCES = {"configured": 0, "topic": 1, "estimated": 2}
# The heartbeat lists at most this many sensors (alerting first, then the most drops, then the
# busiest) and stays under HEARTBEAT_MAX_BYTES whatever names arrive (docs/protocol.md).
HEARTBEAT_SENSORS = 100
HEARTBEAT_MAX_BYTES = 60_000
# sensors whose speed / indicators one step computes at most (estimate_speeds, publish_indicators):
# one each (~6 + ~3 ms) keeps a window's wait behind them under the 50 ms alert-latency budget
# (2 and 4 cost up to ~25 ms per step: p99 50-65 ms at 50-90 faulttype sensors)
SPEED_ESTIMATES_PER_STEP = 1
# Beyond the first PACE_SENSORS sensors, a sensor's first speed estimate and indicator set
# are due at its own phase of the interval (from a hash of its name), after its first 2 s of
# signal: sensors that start together are then spread over the interval and stay spread,
# since each next read is due one interval after the last. Before, 100 sensors all became
# due 2 s after start and came back as one block every 5 s, served one per step (and all held
# 2 s of history at once, see plan_history). Alert latency did not measurably change either
# way (docs/edge_footprint.md). The first PACE_SENSORS sensors start at once, as before.
PACE_SENSORS = 8
INDICATORS_PER_STEP = 1


class Link(TopicLink, Sink, Protocol):
    """The agent's line to the cloud (MQTT, memory): it publishes, and takes the cloud's commands
    and model updates on subscribed topics."""

    def close(self) -> None: ...


@dataclass
class _Sensor:
    windower: SensorWindower
    alerter: Alerter
    anomaly: AnomalyDetector | None
    anomaly_alerter: Alerter
    rpm: float
    asset: str
    evidence: EvidenceConfig
    seen: int = 0  # windows inferred
    rpm_source: str = "configured"  # "configured" | "topic" | "estimated" (RPM_SOURCES)
    rpm_estimated: float | None = None  # the last confident spectral estimate (edge/speed.py)
    next_speed: float = 0.0  # agent time of the next speed estimate
    next_indicators: float = 0.0  # agent time of the next indicators message
    speed_reads: bool = False  # its speed is estimated (2 s reads every speed_interval_s)
    long: bool = True  # its ring keeps the 2 s now (else the evidence's 1 s)
    cut: int = 0  # windows cut so far (the thinning keeps every factor-th, edge/shedding.py)
    t_end_ns: int = 0  # signal time at the end of the latest window


@dataclass
class _Pending:
    sensor: str
    t_end_ns: int  # signal time at the window's end
    arrived: float  # monotonic time the completing frame was received
    x: F32 = field(repr=False)


class Agent:
    """Compose a model, a :class:`Link` (the sink), a source and an :class:`Outbox`; drive with
    :meth:`step` or :meth:`run`. ``source=None``: the frames ride the link (one MQTT session)."""

    def __init__(self, cfg: AgentConfig, model: Model, link: Link, outbox: Outbox, *,
                 source: Source | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_ns: Callable[[], int] = time.time_ns,
                 anomaly_baseline: int = 200) -> None:
        self.slot = ModelSlot(model)  # shared with the updater, which swaps it between batches
        self.cfg, self.link, self.outbox = cfg, link, outbox
        self.clock, self.wall_ns = clock, wall_ns
        self.topics = proto.Topics(cfg.site, cfg.gateway)
        self.metrics = Metrics(clock=clock, max_sensors=cfg.max_sensors)
        # off (every window inferred) unless a budget is set; then it starts at the largest factor
        self.thinner = Thinner(cfg.latency_budget_ms, clock, start=self._most_thinning())
        self._inference_s = 0.0  # agent time this step spent in infer (the thinner's share)
        self._deferred = False  # the last step left its 2 s reads to this one (latency budget)
        self.sensors: dict[str, _Sensor] = {}
        self.sampler = EvidenceSampler(cfg.evidence, self.topics, outbox, lambda: self.model, self.metrics,
                                       clock) if cfg.evidence.enabled else None  # raw windows for the cloud
        self._anomaly_baseline = anomaly_baseline
        self._next_plan = clock()
        self._pending: list[_Pending] = []
        # sink token -> (outbox row id, "alerts" | "evidence" | "model_status" | "replay", topic, payload)
        self._inflight: dict[int, tuple[int, str, str, bytes]] = {}
        self._replay = AckReplay(cfg.outbox.replay_s, clock)
        self._replay_rids: set[int] = set()  # outbox rows that re-send an acknowledged alert
        self._next_hb = clock()
        self._log_counts: dict[str, int] = {}
        self._fault_policy = AlertPolicy(p_on=cfg.alert.p_on, p_off=cfg.alert.p_off, k=cfg.alert.k,
                                         n=cfg.alert.n, m=cfg.alert.m, cooldown_s=cfg.alert.cooldown_s)
        self._anomaly_policy = AlertPolicy(p_on=1.0, p_off=0.8, k=cfg.alert.k, n=cfg.alert.n,
                                           m=cfg.alert.m, cooldown_s=cfg.alert.cooldown_s)
        self.slot.on_swap(self._model_swapped)
        self.updater = Updater(cfg, self.slot, self.metrics,  # signed model updates: verify, shadow-run, swap
                               lambda doc: self.send_reliably(self.topics.model_status, doc),
                               clock=clock, wall_ns=wall_ns)
        # frames and shaft speeds; with no source of its own they ride the link (subscribed there)
        self.source: Source = source if source is not None else TopicSource(link, self.topics, rpm_topics(cfg))
        # the cloud's commands and model updates come over the link; read apart only when the
        # source has a connection of its own
        self._control = None if source is None else TopicSource(link, self.topics, frames=False)
        for f in (self.topics.cmd, self.topics.models):
            link.subscribe(f, qos=1)  # an update chunk or a command must not be dropped

    @property
    def model(self) -> Model:
        """The model running now (``slot.current``)."""
        return self.slot.current

    @model.setter
    def model(self, model: Model) -> None:
        self.slot.current = model

    @property
    def model_info(self) -> dict[str, str]:
        """``{name, version, sha256}`` of the running model, as alerts and heartbeats carry it."""
        return self.slot.info

    def _model_swapped(self, old: Model, new: Model) -> None:
        """An alert (or vote history) of a class the new model lacks is stale: those alerters start afresh."""
        gone = set(old.meta.classes) - set(new.meta.classes)
        for s in self.sensors.values():
            if gone and (s.alerter.active is None or s.alerter.active in gone):
                s.alerter = Alerter(s.alerter.policy, s.alerter.clock)

    # -- per message --------------------------------------------------------------------
    def _sensor(self, name: str) -> _Sensor:
        s = self.sensors.get(name)
        if s is None:
            sc, meta = self.cfg.sensor(name), self.model.meta
            # 2 s of history where the speed estimate (1 s is refused far more often) or the indicators
            # read it; else the evidence's 1 s (the ring is then a window + RING_SLACK: 24.6 kB of int16
            # instead of 48 kB per sensor at 12 kHz)
            speed_reads = bool(sc.speed_estimate and not sc.rpm_topic)
            needs = self.cfg.indicators.enabled or speed_reads
            history_s = SPEED_HISTORY_S if needs else EVIDENCE_HISTORY_S
            s = _Sensor(SensorWindower(meta.window, self.cfg.hop or meta.hop, meta.sample_rate, history_s=history_s),
                        Alerter(self._fault_policy, self.clock),
                        AnomalyDetector(self._anomaly_baseline) if self.cfg.alert.anomaly else None,
                        Alerter(self._anomaly_policy, self.clock), sc.rpm, sc.asset or name,
                        EvidenceConfig(geometry=sc.geometry(), rpm=sc.rpm), speed_reads=speed_reads, long=needs)
            if len(self.sensors) >= PACE_SENSORS:
                phase = zlib.crc32(name.encode()) / 2**32  # in [0, 1), the same on every start
                now = self.clock()
                s.next_speed = now + SPEED_HISTORY_S + phase * sc.speed_interval_s
                s.next_indicators = now + SPEED_HISTORY_S + phase * self.cfg.indicators.interval_s
            self.sensors[name] = s
            log.info("discovered sensor %r", name)
        return s

    def _drop(self, reason: str, exc: Exception, sensor: str | None = None) -> None:
        self.metrics.drop(reason, sensor)
        n = self._log_counts[reason] = self._log_counts.get(reason, 0) + 1
        if n <= 3 or n % 1000 == 0:  # a stream of garbage must not flood the log
            log.warning("dropped message #%d (%s, sensor %s): %s", n, reason, sensor, exc)

    def handle(self, item: Reading | Message) -> None:
        """Take one reading (completed windows wait in the batch) or one message from the cloud."""
        if isinstance(item, Message):
            return self._handle_control(item)
        if item.kind == "rpm":
            return self._handle_rpm(item.sensor, item.payload)
        sensor = item.sensor
        # Metric labels only for admitted sensors (configured, or one decodable frame within
        # max_sensors): invented names must not grow the metrics or the heartbeat (their drops
        # count globally, by reason).
        known = sensor in self.sensors or sensor in self.cfg.sensors
        self.metrics.inc("frames_in", sensor=sensor if known else None)
        if not known and len(self.sensors) >= self.cfg.max_sensors:
            return self._drop("too_many_sensors", EdgeError(
                "edge.agent", f"sensor {sensor!r} beyond max_sensors={self.cfg.max_sensors}",
                "raise max_sensors or find the publisher inventing sensor names"))
        try:
            frame = decode(item.payload, self.cfg.max_frame_samples)
            s = self._sensor(sensor)
            if not known:
                self.metrics.inc_sensor(sensor, "frames_in")
            windows = s.windower.push_timed(frame)
        except FrameError as exc:
            return self._drop(exc.reason, exc, sensor if known or sensor in self.sensors else None)
        except EdgeError as exc:  # e.g. a sample rate with no small ratio to the model's
            return self._drop("bad_rate", exc, sensor if known or sensor in self.sensors else None)
        dur = round(self.model.meta.window * 1e9 / self.model.meta.sample_rate)
        for t_ns, x in windows:
            s.t_end_ns = t_ns + dur
            k, s.cut = s.cut, s.cut + 1
            if not self.thinner.keep(k):
                self.metrics.inc("windows_thinned")
                continue
            self._pending.append(_Pending(sensor, t_ns + dur, item.t, x))

    def _handle_control(self, msg: Message) -> None:
        try:
            info = proto.parse_topic(msg.topic, self.topics.prefix)
        except ProtocolError as exc:
            return self._drop(exc.reason, exc)
        if info.kind == "cmd":
            return self._handle_cmd(msg.payload)
        if info.kind == "models":
            return self.updater.on_message(msg.payload)

    def _most_thinning(self) -> int:
        """The largest thinning factor: inferred windows at most half a window apart."""
        meta = self.model.meta
        return max(1, meta.window // (2 * (self.cfg.hop or meta.hop)))

    @staticmethod
    def _fault_hz(s: _Sensor) -> FaultHz:
        """The sensor's fault frequencies at the speed in use (configured, published or estimated)."""
        return _cached_fault_hz(s.evidence.geometry, round(s.evidence.rpm, 3))

    def _handle_rpm(self, sensor: str, payload: bytes) -> None:
        try:
            rpm = float(payload)
        except ValueError:
            rpm = float("nan")
        if not 0 < rpm < 1e6:
            return self._drop("bad_rpm", EdgeError("edge.agent", f"rpm payload {payload[:40]!r}",
                                                   "publish the shaft speed as a number in rpm"), sensor)
        s = self._sensor(sensor)
        s.rpm, s.evidence, s.rpm_source = rpm, EvidenceConfig(geometry=s.evidence.geometry, rpm=rpm), "topic"

    def plan_history(self, now: float) -> None:
        """Every HISTORY_PLAN_S: each sensor keeps 2 s of history from HISTORY_LEAD_S before its
        next 2 s read (speed estimate, indicators) is due until it is made, else the evidence's 1 s."""
        if now < self._next_plan:
            return
        self._next_plan = now + HISTORY_PLAN_S
        indicators = self.cfg.indicators.enabled
        for s in self.sensors.values():
            if not (indicators or s.speed_reads):
                continue  # never reads 2 s: its ring was made short
            due = min(s.next_speed if s.speed_reads else float("inf"),
                      s.next_indicators if indicators else float("inf"))
            long = now >= due - HISTORY_LEAD_S
            if long != s.long:
                s.windower.set_history(SPEED_HISTORY_S if long else EVIDENCE_HISTORY_S)
                s.long = long

    def estimate_speeds(self, now: float) -> None:
        """Every ``speed_interval_s``, per sensor with no ``rpm_topic``: shaft speed from the last
        2 s around the configured ``rpm``; a confident estimate becomes the speed in use, a
        refusal keeps the speed in use as it was."""
        fs = self.model.meta.sample_rate
        done = 0
        for name, s in self.sensors.items():
            sc = self.cfg.sensor(name)
            if sc.rpm_topic or not sc.speed_estimate or now < s.next_speed:
                continue
            if done >= SPEED_ESTIMATES_PER_STEP:  # ~6 ms each: 50 sensors due at once stalled the loop
                break
            x = s.windower.recent()
            if x.size < SPEED_HISTORY_S * fs:  # just started or reset by a gap: wait for 2 s
                continue
            done += 1
            s.next_speed = now + sc.speed_interval_s
            try:
                est = estimate_speed(x, fs, sc.rpm, search=sc.speed_search)
            except EdgeError as exc:  # e.g. an rpm too high for the model's rate
                self._drop("speed_error", exc, name)
                continue
            self.metrics.inc("speed_estimates" if est else "speed_refused", sensor=name)
            if est is not None:
                s.rpm_estimated, s.rpm_source = est.rpm, "estimated"
                s.rpm, s.evidence = est.rpm, EvidenceConfig(geometry=s.evidence.geometry, rpm=est.rpm)

    def publish_indicators(self, now: float) -> None:
        """Every ``indicators.interval_s`` per sensor: condition indicators of the last 2 s the
        windower keeps (edge/indicators.py), once per interval, not per window. QoS 0, not the
        outbox: they are periodic and the next one replaces a lost one; alerts carry what must
        not be lost, and trend points must not take their outbox room during an outage. At most
        INDICATORS_PER_STEP sensors per step (~3 ms each): 100 sensors due at once do not stall
        the loop, the rest follow in the next steps."""
        fs = self.model.meta.sample_rate
        done = 0
        for name, s in self.sensors.items():
            if now < s.next_indicators or done >= INDICATORS_PER_STEP:
                continue
            x = s.windower.recent()
            if x.size < SPEED_HISTORY_S * fs:  # just started or reset by a gap: wait for the full stretch
                continue
            s.next_indicators = now + self.cfg.indicators.interval_s
            done += 1
            sc = self.cfg.sensor(name)
            try:
                ind = compute_indicators(x, fs, self._fault_hz(s), group=sc.iso_group, foundation=sc.iso_foundation)
                ratio = s.anomaly.last_ratio if s.anomaly is not None else None
                doc = proto.make_indicators(
                    site=self.cfg.site, gateway=self.cfg.gateway, sensor=name, asset=s.asset, t_ns=s.t_end_ns,
                    sample_rate=fs, iso_group=sc.iso_group, iso_foundation=sc.iso_foundation, rpm=round(s.rpm, 1),
                    rpm_source=s.rpm_source, anomaly_ratio=None if ratio is None else round(ratio, 4),
                    **ind.fields())
            except (EdgeError, WireError) as exc:
                self._drop("indicators_error", exc, name)
                continue
            self.link.publish(self.topics.indicators, proto.dumps(doc), qos=0)
            self.metrics.inc("indicators_sent", sensor=name)

    def _handle_cmd(self, payload: bytes) -> None:
        try:
            cmd = json.loads(payload).get("cmd")
        except (ValueError, AttributeError) as exc:
            return self._drop("bad_cmd", exc)
        if cmd == "heartbeat":
            self._next_hb = self.clock()
        else:
            self._drop("bad_cmd", EdgeError("edge.agent", f"cmd={cmd!r}", "send {\"cmd\": \"heartbeat\"}"))

    # -- batched inference and alerts -------------------------------------------------------
    @property
    def _batch_limit(self) -> int:
        """The most windows one batch holds: ``batch_size``, fewer under a latency budget."""
        return self.thinner.batch_limit(self.cfg.batch_size)

    def _batch_due(self, now: float) -> bool:
        if not self._pending:
            return False
        return (len(self._pending) >= self._batch_limit
                or now - self._pending[0].arrived >= self.cfg.batch_deadline_ms / 1000)

    def infer(self) -> None:
        """Run the model on up to ``batch_size`` waiting windows and act on the results."""
        most = self._batch_limit
        batch, self._pending = self._pending[:most], self._pending[most:]
        if not batch:
            return
        t0, started = time.perf_counter(), self.clock()  # real work time, whatever clock drives the agent
        try:
            context = [self._fault_hz(self.sensors[p.sensor]) for p in batch]
            probs = self.updater.predict(np.stack([p.x for p in batch])[:, None, :], context)
        except EdgeError as exc:  # e.g. a model that fails on this input: lose the batch, not the agent
            for p in batch:
                self._drop("model_error", exc, p.sensor)
            return
        self.metrics.observe("inference_ms", (time.perf_counter() - t0) * 1000)
        self.metrics.inc("batches")
        classes = self.model.meta.classes
        for p, row in zip(batch, probs, strict=True):
            s = self.sensors[p.sensor]
            self.metrics.inc("windows", sensor=p.sensor)
            if self.sampler is not None:  # before the alerter: an alert's windows include this one
                self.sampler.observe(p.sensor, p.t_end_ns, p.x, row, s.rpm, s.evidence.geometry)
            for ev in s.alerter.update_probs(row, classes):
                self._alert(p, s, "fault", ev, row)
            s.seen += 1
            if s.anomaly is not None and s.seen % self.cfg.alert.anomaly_every == 0:
                res = s.anomaly.update(p.x)
                if res.ready:
                    for ev in s.anomaly_alerter.update("anomaly", res.ratio):
                        self._alert(p, s, "anomaly", ev, row, (res.score, res.threshold))
            latency_ms = (self.clock() - p.arrived) * 1000
            self.metrics.observe("latency_ms", latency_ms)
            if self.thinner.enabled and latency_ms > self.cfg.latency_budget_ms:
                self.metrics.inc("windows_late")  # over the whole run: p99 <= budget <=> <= 1 % late
        if self.thinner.enabled:
            done = self.clock()
            self._inference_s += done - started
            self.thinner.batched(len(batch), done - started)
            self.thinner.observe((done - batch[0].arrived) * 1000, batch[0].arrived, self._most_thinning())

    def _alert(self, p: _Pending, s: _Sensor, kind: str, ev: AlertEvent, probs: F32,
               anomaly: tuple[float, float] | None = None) -> None:
        raised = ev.state == "raised"
        try:
            # the history holds 2 s for the speed estimate and indicators, or 1 s (EVIDENCE_HISTORY_S)
            last_1s = s.windower.recent()[-int(EVIDENCE_HISTORY_S * self.model.meta.sample_rate):]
            evidence = analyze(last_1s, self.model.meta.sample_rate, s.evidence) if raised else None
        except EdgeError as exc:  # the alert still goes out, without physics evidence
            log.warning("no evidence for %s: %s", p.sensor, exc)
            evidence = None
        fault = kind == "fault"
        doc = proto.make_alert(
            site=self.cfg.site, gateway=self.cfg.gateway, sensor=p.sensor, kind=kind, state=ev.state,
            t_ns=p.t_end_ns, cls=ev.label if fault else None,
            # the class's own probability (the vote was P(faulty), edge/alerting.py)
            probability=float(min(1.0, ev.value if ev.class_p is None else ev.class_p)) if fault and raised else None,
            anomaly_score=anomaly[0] if anomaly and raised else None,
            anomaly_threshold=anomaly[1] if anomaly else None,
            physics=evidence.fault_type if evidence else None,
            agree=evidence.agrees_with(ev.label) if evidence and fault else None,
            model=self.model_info, evidence=evidence.to_dict() if evidence else None, windows=ev.windows)
        probs_map = {c: round(float(v), 4) for c, v in zip(self.model.meta.classes, probs, strict=True)}
        if fault and raised:  # one fused fault type (or unknown) and what carried it
            doc["verdict"] = fuse(probs_map, doc["physics"], s.anomaly.last_ratio if s.anomaly else None).to_dict()
            proto.validate_alert(doc)
        doc.update(asset=s.asset, created_ns=self.wall_ns(),  # severity: make_alert decided it
                   probs=probs_map,
                   stats={k: round(v, 4) for k, v in window_stats(p.x).items()}, rpm=s.rpm)
        self.metrics.inc(f"alerts_{kind}_{ev.state}", sensor=p.sensor)
        log.info("%s alert %s: sensor %s class %s p=%s physics=%s verdict=%s", kind, ev.state, p.sensor,
                 doc["class"], doc["probability"], doc["physics"], (doc.get("verdict") or {}).get("fault_type"))
        self.send_reliably(self.topics.alerts, proto.dumps(doc), sensor=p.sensor)
        if raised and self.sampler is not None:  # after the alert, so it is published first
            self.sampler.on_alert(p.sensor, doc["id"])

    # -- delivery ---------------------------------------------------------------------------
    def send_reliably(self, topic: str, payload: bytes, sensor: str | None = None) -> None:
        """Store a message in the outbox (never evicted) to publish at QoS 1 and re-send until acked."""
        try:
            self.outbox.put(topic, payload, qos=1, priority=PRIORITY_ALERT)
        except (OutboxError, sqlite3.Error) as exc:  # full of alerts, or the disk is full
            # Not stored: still publish it (QoS 1, not replayed after a restart) rather than lose it.
            self.metrics.inc("outbox_write_failed", sensor=sensor)
            if self.link.publish(topic, payload, qos=1) is None:
                self._drop("outbox_full" if isinstance(exc, OutboxFullError) else "outbox_error", exc, sensor)

    def deliver(self) -> None:
        """Settle PUBACKs, then hand unsent outbox rows to the sink, oldest first."""
        try:
            self._deliver()
        except (OutboxError, sqlite3.Error) as exc:  # e.g. disk full: keep running, retry next step
            self.metrics.inc("outbox_errors")
            n = self._log_counts["outbox_errors"] = self._log_counts.get("outbox_errors", 0) + 1
            if n <= 3 or n % 1000 == 0:
                log.warning("outbox error #%d while delivering: %s", n, exc)

    def _deliver(self) -> None:
        for topic, payload in self._replay.link_state(self.link.connected):
            self._replay_rids.add(self.outbox.put(topic, payload, qos=1, priority=PRIORITY_ALERT))
            self.metrics.inc("replayed")  # not alerts_*: these are re-sends of counted alerts
        for acked in self.link.acked():
            sent = self._inflight.pop(acked, None)
            if sent is None:
                continue
            rid, kind, topic, payload = sent
            if self.outbox.ack(rid):
                self.metrics.inc(f"{kind}_acked")
                if kind == "alerts":
                    self._replay.acked(topic, payload)
                self._replay_rids.discard(rid)
        if not self.link.connected or len(self.outbox) <= len(self._inflight):
            return
        for rec in self.outbox.pending(100):
            token = self.link.publish(rec.topic, rec.payload, qos=rec.qos)
            if token is None:
                break  # offline or the sink is full: keep the rest in order for later
            # alerts, evidence, verdicts and re-sends share the outbox; their counters do not
            kind = ("replay" if rec.id in self._replay_rids else
                    "evidence" if rec.topic == self.topics.evidence else
                    "model_status" if rec.topic == self.topics.model_status else "alerts")
            # before the write that may fail: no re-publish every step
            self._inflight[token] = (rec.id, kind, rec.topic, rec.payload)
            self.outbox.mark_inflight(rec.id)
            # (the sampler's evidence_sent counts windows queued; evidence_published, those sent)
            if kind in ("alerts", "evidence", "model_status"):
                self.metrics.inc("alerts_sent" if kind == "alerts" else f"{kind}_published")

    def heartbeat(self) -> dict[str, Any]:
        """Publish (QoS 0) and return the heartbeat document."""
        heap.trim()  # free heap back to the OS first, so the RSS it reports is the live data (edge/heap.py)
        m, src = self.metrics, self.source.stats()
        snap = m.snapshot()
        sensors = dict(cast("dict[str, dict[str, int | float]]", snap["sensors"]))
        for name, s in self.sensors.items():
            st = s.windower.stats
            sensors[name] = {**sensors.get(name, {}), "gaps": st.gaps, "reorders": st.reorders,
                             "resets": st.resets, "alert_active": int(s.alerter.active is not None)}
            sensors[name].update(_speed_fields(self.cfg.sensor(name).rpm, s))
        inf, lat = m.percentiles("inference_ms"), m.percentiles("latency_ms")
        counters = dict(cast("dict[str, int | float]", snap["counters"]))
        counters.update(inference_p50_ms=inf["p50"], inference_p99_ms=inf["p99"],
                        latency_p50_ms=lat["p50"], latency_p99_ms=lat["p99"],
                        queue_depth=src["depth"], pending_windows=len(self._pending),
                        received=src["received"], inflight=len(self._inflight),
                        thin_factor=self.thinner.factor, thin_changes=self.thinner.changes)
        if self.thinner.enabled:  # the shares the thinning decides on (edge/shedding.py)
            counters.update(busy_share=round(self.thinner.busy, 3), inference_share=round(self.thinner.inference, 3),
                            batch_limit=self._batch_limit)
        drops = dict(cast("dict[str, int]", snap["drops"]))
        for key, reason in (("overflow", "queue_full"), ("overflow_bytes", "queue_bytes_full"),
                            ("too_large", "too_large")):  # dropped by the inbox, before the agent saw them
            if src.get(key):
                drops[reason] = src[key]
        ranked = sorted(sensors, key=lambda n: (-sensors[n].get("alert_active", 0), -sensors[n].get("dropped", 0),
                                                -sensors[n].get("frames_in", 0), n))
        listed = {n: sensors[n] for n in ranked[:HEARTBEAT_SENSORS]}
        counters.update(sensors=len(sensors), sensors_omitted=len(sensors) - len(listed),
                        inbox_bytes=src.get("bytes", 0), inbox_evicted=src.get("evicted", 0))
        doc = proto.make_heartbeat(site=self.cfg.site, gateway=self.cfg.gateway, t_ns=self.wall_ns(),
                                   uptime_s=m.uptime(), model=self.model_info, sensors=listed, drops=drops,
                                   counters=counters, resources=m.resources(),
                                   outbox_pending=len(self.outbox), agent_version=__version__)
        payload = proto.dumps(doc)
        while len(payload) > HEARTBEAT_MAX_BYTES and doc["sensors"]:  # long names, many counters: list fewer
            doc["sensors"] = dict(list(doc["sensors"].items())[: len(doc["sensors"]) // 2])
            doc["counters"]["sensors_omitted"] = len(sensors) - len(doc["sensors"])
            payload = proto.dumps(doc)
        self.link.publish(self.topics.heartbeat, payload, qos=0)
        return doc

    # -- the loop ---------------------------------------------------------------------------
    def step(self, max_messages: int = 256) -> None:
        """One pass: take messages (waiting at most until the next batch is due), infer, deliver."""
        deadline = self.cfg.batch_deadline_ms / 1000
        started = self.clock()
        for i in range(max_messages):
            # Block only for the first message, and no longer than the oldest window may wait.
            wait = 0.0 if i else (deadline if not self._pending
                                  else max(0.0, self._pending[0].arrived + deadline - self.clock()))
            try:
                item = self.source.poll(wait)
                if not i:
                    started = self.clock()  # the step works from here (the latency budget's busy time)
            except ProtocolError as exc:  # received, but names no sensor (e.g. a bad name in the topic)
                self._drop(exc.reason, exc)
                continue
            if item is None:
                break
            self.handle(item)
            if len(self._pending) >= self._batch_limit:
                break
        if self._control is not None:
            self._take_control()
        now = self.clock()
        batches = 0
        while self._batch_due(now):
            self.infer()
            batches += 1
        self.deliver()
        self.updater.tick()  # an unfinished model update times out
        # With a latency budget, a step that inferred a batch leaves the 2 s reads (a speed
        # estimate ~6 ms, an indicator set ~4 ms) and a due heartbeat to the next step, so one
        # step does not hold a batch and a read (32-44 ms at 100 sensors, docs/edge_footprint.md);
        # never two steps in a row, so the reads keep their rate when every step carries a batch.
        defer = self.thinner.enabled and batches > 0 and not self._deferred
        self._deferred = defer
        if not defer:
            self.estimate_speeds(now)
        self.plan_history(now)
        if self.cfg.indicators.enabled and not defer:
            self.publish_indicators(now)
        if now >= self._next_hb and not defer:  # its heap trim and document: up to ~17 ms
            self._next_hb = now + self.cfg.heartbeat_s
            self.heartbeat()
        if self.thinner.enabled:
            self.thinner.work(self.clock() - started, self._inference_s)
            self._inference_s = 0.0

    def _take_control(self, most: int = 16) -> None:
        """The cloud's messages waiting on the link, when the source reads elsewhere (rare: no wait)."""
        if self._control is None:
            return
        for _ in range(most):
            try:
                msg = self._control.poll(0.0)
            except ProtocolError as exc:
                self._drop(exc.reason, exc)
                continue
            if msg is None:
                return
            self.handle(msg)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, then flush: pending windows, a last heartbeat, PUBACKs."""
        log.info("agent %s/%s running model %s v%s", self.cfg.site, self.cfg.gateway,
                 self.model_info["name"], self.model_info["version"])
        while not stop.is_set():
            self.step()
        self.flush()

    def flush(self, timeout: float = 2.0) -> None:
        """Infer what is buffered, send a final heartbeat, wait briefly for outstanding PUBACKs."""
        while self._pending:
            self.infer()
        end = self.clock() + timeout
        self.deliver()
        self.heartbeat()
        while self._inflight and self.clock() < end:
            time.sleep(0.02)
            self.deliver()


def _speed_fields(configured: float, s: _Sensor) -> dict[str, int | float]:
    """Configured vs in-use vs estimated shaft speed for the heartbeat (docs/protocol.md)."""
    out: dict[str, int | float] = {"rpm_configured": configured, "rpm_in_use": round(s.rpm, 1),
                                   "rpm_source": RPM_SOURCES[s.rpm_source]}
    if s.rpm_estimated is not None:  # absent, not null: heartbeat values are numbers
        out["rpm_estimated"] = round(s.rpm_estimated, 1)
        out["rpm_disagree_pct"] = round((s.rpm_estimated / configured - 1) * 100, 2)
    return out
