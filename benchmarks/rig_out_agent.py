"""Leave-one-rig-out through a real agent on a real broker: the number a user experiences.

For each held-out rig (``cwru``, ``hit-sq``, ``hit-sb``, ``mfpt``):

1. train the fold's fault-type model on the OTHER rigs + simulated bearings
   (``edgevib.models.faulttype``: ``features_of``, ``FeatureSet.concat``, ``train``) and write
   it as a two-input ONNX model with ``contract.save``, exactly as ``edgevib models faulttype``
   does; the held-out rig is read only to be streamed;
2. start ``edgevib agent --config gw.toml`` as its own process against a private Mosquitto
   (``edgevib.broker.MosquittoProcess``), with one ``[sensors.NAME]`` per recording of the
   held-out rig, configured with that recording's bearing geometry and shaft speed, and the
   fold model; the alert policy is the agent's default unless ``--alert KEY=VALUE`` is given;
3. stream every recording of the rig as binary frames on its own sensor topic, all sensors
   interleaved by signal time, faster than real time. The publisher resamples each
   recording to the model's 12 kHz first (``edgevib.models.data.resample``, the function
   training uses): the agent's windower resamples only small rational ratios, and MFPT's
   48,828 Hz has none. Frames go to the broker at QoS 1; the agent subscribes to frames at
   QoS 0, so the publisher also paces itself on the agent's heartbeat (at most
   ``--max-ahead`` frames sent and not yet taken in by the agent) and the report checks
   the agent's drops;
4. count per recording: a fault alert raised or not; seconds of *signal* from the first
   frame to the raised alert (alert ``t_ns``, the end of the confirming window, minus the
   first frame's ``t0``); whether the first alert's fault type is right, by the model's class
   and by the fused verdict (``verdict.fault_type``, which may be ``unknown``); any fault alert
   on a healthy recording. Anomaly alerts are counted apart (the anomaly baseline needs more
   windows than any recording here has, so there are none).

Streaming runs tens of times faster than real time. Latencies are in signal time, which pacing
does not change; what the agent does by its own (wall) clock does change: the alert cooldown
(irrelevant to the first alert) and, for agents that estimate the shaft speed every
``speed_interval_s`` of agent time, how many estimates a recording gets (about one per sensor
here, after 2 s of signal; most first alerts come before it, at the configured speed).
``--sensor speed_estimate=false`` pins the configured speed for a comparison.

Targets of issue 13 (reported, not asserted): every fault recording raises within 2 s of
signal, fused type right >= 90 %, no fault alert on any healthy recording.

    .venv/bin/python benchmarks/rig_out_agent.py [--rigs mfpt,hit-sq] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.edge.mqtt import MqttLink
from edgevib.models.classes import fault_type
from edgevib.models.contract import ModelMeta, save
from edgevib.models.data import MODEL_FS, Recording, load_dir, resample
from edgevib.models.faulttype import (
    CLASSES,
    HOP,
    KIND,
    WINDOW,
    FeatureSet,
    features_of,
    simulated,
    train,
)

from edgevib import __version__
from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.frames import Frame, encode

log = logging.getLogger("rig_out_agent")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RIGS = ("cwru", "hit-sq", "hit-sb", "mfpt")
SIM_RECORDINGS = 240
FRAME = 4096
TARGET_S = 2.0
RPM_SOURCES = {0: "configured", 1: "topic", 2: "estimated"}  # heartbeat sensors[...]["rpm_source"]
Progress = Callable[[str], None]


def rig_dirs(cwru: Path | None = None, bearings: Path | None = None) -> dict[str, Path]:
    """Folder of each rig (``$EDGEVIB_CWRU_DIR``/``$EDGEVIB_BEARINGS_DIR`` or ``../shared``)."""
    c = cwru or Path(os.environ.get("EDGEVIB_CWRU_DIR", SHARED / "cwru"))
    b = bearings or Path(os.environ.get("EDGEVIB_BEARINGS_DIR", SHARED / "bearings"))
    return {"cwru": c, "hit-sq": b / "hit-sq", "hit-sb": b / "hit-sb", "mfpt": b / "mfpt"}


def load_rigs(dirs: Mapping[str, Path]) -> dict[str, list[Recording]]:
    out = {}
    for rig, d in dirs.items():
        recs = load_dir(d)
        bad = {r.rig for r in recs} - {rig}
        if bad:
            raise ValueError(f"{d} holds recordings of rigs {sorted(bad)}, expected only {rig}")
        out[rig] = recs
    return out


# -- the fold model ------------------------------------------------------------------------
def train_fold(held: str, train_features: Mapping[str, FeatureSet], sim: FeatureSet | None, out: Path, *,
               sim_n: int, seed: int) -> ModelMeta:
    """Train on ``train_features`` (rigs other than ``held``) + ``sim``; write the two-input ONNX model."""
    rigs = sorted(train_features)
    if held in rigs:
        raise ValueError(f"the fold holding out {held!r} must not train on it")
    data = FeatureSet.concat([train_features[r] for r in rigs] + ([sim] if sim is not None else []))
    seen = {str(r) for r in np.unique(data.rig)}
    assert held not in seen, f"held-out rig {held} in the training set"
    model = train(data)
    n_recs = sum(len(train_features[r].sources) for r in rigs)
    n_win = sum(len(train_features[r].y) for r in rigs)
    meta = ModelMeta(CLASSES, MODEL_FS, WINDOW, HOP, model.arch, __version__,
                     f"rigs {', '.join(rigs)}: {n_recs} recordings, {n_win} windows; "
                     f"{sim_n if sim is not None else 0} simulated bearings (seed {seed})",
                     {"temperature": round(model.temperature, 3), "held_out": held}, KIND)
    return save(model.to_onnx(), meta, out)


# -- the agent -----------------------------------------------------------------------------
def sensor_name(i: int, rec: Recording) -> str:
    return f"r{i:02d}-" + re.sub(r"[^A-Za-z0-9_.:-]", "_", Path(rec.source).stem)[:50]


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def write_config(path: Path, *, broker_url: str, site: str, gateway: str, model: Path, outbox: Path,
                 sensors: Mapping[str, Recording], heartbeat_s: float, alert: Mapping[str, Any],
                 sensor_opts: Mapping[str, Any] | None = None) -> Path:
    """The gateway's TOML: the fold model and one sensor per recording with its bearing and speed
    (plus ``sensor_opts`` in every sensor's table)."""
    lines = [f"broker_url = {_toml(broker_url)}", f"site = {_toml(site)}", f"gateway = {_toml(gateway)}",
             f"model = {_toml(model)}", f"heartbeat_s = {_toml(heartbeat_s)}", "", "[outbox]",
             f"path = {_toml(outbox)}"]
    if alert:
        lines += ["", "[alert]", *(f"{k} = {_toml(v)}" for k, v in alert.items())]
    for name, rec in sensors.items():
        g = rec.geometry
        lines += ["", f"[sensors.{json.dumps(name)}]", f"asset = {_toml(rec.source)}",
                  f"n_balls = {int(g.n_balls)}", f"ball_diameter = {float(g.ball_diameter)!r}",
                  f"pitch_diameter = {float(g.pitch_diameter)!r}",
                  f"contact_angle_deg = {float(g.contact_angle_deg)!r}", f"rpm = {float(rec.rpm)!r}",
                  *(f"{k} = {_toml(v)}" for k, v in (sensor_opts or {}).items())]
    path.write_text("\n".join(lines) + "\n")
    return path


class Watch:
    """The cloud's side: alerts and heartbeats of one gateway."""

    def __init__(self, url: str, topics: proto.Topics) -> None:
        self.topics = topics
        self.link = MqttLink(url, f"rig-out-watch-{topics.gateway}", reconnect=(1, 1), connect=False)
        for t in (topics.alerts, topics.heartbeat):  # not the frames
            self.link.subscribe(t, qos=1)
        self.link.start()
        if not self.link.wait_connected(10):
            raise RuntimeError(f"no broker at {url}")
        self.alerts: list[dict[str, Any]] = []
        self.hb: dict[str, Any] | None = None
        self.heartbeats = 0

    def pump(self, seconds: float = 0.0) -> None:
        end = time.monotonic() + seconds
        while True:
            m = self.link.poll(0.02 if seconds else 0.0)
            if m is None:
                if time.monotonic() >= end:
                    return
                continue
            if m.topic == self.topics.alerts:
                self.alerts.append(proto.parse_alert(m.payload))
            elif m.topic == self.topics.heartbeat:
                self.hb = proto.parse_heartbeat(m.payload)
                self.heartbeats += 1

    def counter(self, name: str) -> float:
        return float((self.hb or {}).get("counters", {}).get(name, 0))

    def close(self) -> None:
        self.link.close()


def start_agent(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("EDGEVIB_") or k.endswith("_DIR")}  # the TOML decides
    with open(log_path, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "edgevib.cli", "agent", "--config", str(config)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=config.parent)


def stop_agent(p: subprocess.Popen[bytes]) -> int | None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    return p.returncode


def _wait(cond: Callable[[], bool], watch: Watch, timeout: float, what: str,
          agent: subprocess.Popen[bytes] | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        watch.pump(0.05)
        if cond():
            return True
        if agent is not None and agent.poll() is not None:
            raise RuntimeError(f"the agent exited ({agent.returncode}) while waiting for {what}")
    log.warning("timed out after %.0f s waiting for %s", timeout, what)
    return False


def stream(tx: MqttLink, watch: Watch, signals: Mapping[str, np.ndarray], t0_ns: int, *, frame: int = FRAME,
           dtype: str = "float32", max_ahead: int = 256, qos: int = 1,
           agent: subprocess.Popen[bytes] | None = None) -> dict[str, int]:
    """Every sample of every signal (12 kHz) in frames, interleaved by signal time; returns frames per sensor.

    Flow control: never more than ``max_ahead`` frames sent and not yet counted in the
    agent's ``frames_in`` (its heartbeat), so neither the broker's queue nor the agent's
    inbox overflows however fast or slow the agent runs.
    """
    n_frames = {s: -(-len(x) // frame) for s, x in signals.items()}  # the last one may be shorter
    sent = dict.fromkeys(signals, 0)
    total, longest = 0, max(n_frames.values())
    base = watch.counter("frames_in")
    for i in range(longest):
        for s, x in signals.items():
            if i >= n_frames[s]:
                continue
            f = Frame(i, t0_ns + round(i * frame * 1e9 / MODEL_FS), MODEL_FS, x[i * frame:(i + 1) * frame])
            payload = encode(f, dtype)  # type: ignore[arg-type]
            while tx.publish(watch.topics.raw(s), payload, qos=qos) is None:  # not taken: link busy or away
                time.sleep(0.01)
            sent[s] += 1
            total += 1
            while total - (watch.counter("frames_in") - base) > max_ahead:
                watch.pump(0.02)
                if agent is not None and agent.poll() is not None:
                    raise RuntimeError(f"the agent exited ({agent.returncode}) while streaming")
    return sent


# -- one fold ------------------------------------------------------------------------------
def _stats(v: Sequence[float]) -> dict[str, float | None]:
    if not v:
        return {"p50": None, "max": None}
    return {"p50": round(float(np.median(v)), 3), "max": round(float(np.max(v)), 3)}


def score(recordings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rig summary of per-recording results."""
    faults = [r for r in recordings if r["type"] != "normal"]
    healthy = [r for r in recordings if r["type"] == "normal"]
    lat = [r["latency_s"] for r in faults if r["raised"]]
    out: dict[str, Any] = {
        "recordings": len(recordings), "fault_recordings": len(faults), "healthy_recordings": len(healthy),
        "streamed_complete": sum(r["frames_in"] == r["frames_sent"] and not r["gaps"] for r in recordings),
        "raised": sum(r["raised"] for r in faults),
        "raised_within_target": sum(r["raised"] and r["latency_s"] <= TARGET_S for r in faults),
        "latency_s": _stats(lat),
        "model_type_right": sum(bool(r["model_right"]) for r in faults),
        "fused_type_right": sum(bool(r["fused_right"]) for r in faults),
        "fused_unknown": sum(r["fused_type"] == "unknown" for r in faults),
        "healthy_false_alerts": sum(r["raised"] for r in healthy),
        "anomaly_alerts": sum(r["anomaly_alerts"] for r in recordings),
        "per_class": {},
    }
    for t in sorted({r["type"] for r in faults}):
        rs = [r for r in faults if r["type"] == t]
        out["per_class"][t] = {"recordings": len(rs), "raised": sum(r["raised"] for r in rs),
                               "model_right": sum(bool(r["model_right"]) for r in rs),
                               "fused_right": sum(bool(r["fused_right"]) for r in rs)}
    n = max(1, len(faults))
    out["rates"] = {"raised": round(out["raised"] / n, 4), "within_target": round(out["raised_within_target"] / n, 4),
                    "model_type_right": round(out["model_type_right"] / n, 4),
                    "fused_type_right": round(out["fused_type_right"] / n, 4)}
    return out


def run_fold(held: str, recs: Sequence[Recording], train_features: Mapping[str, FeatureSet], sim: FeatureSet | None,
             broker_url: str, workdir: Path, *, sim_n: int = SIM_RECORDINGS, seed: int = 0,
             alert: Mapping[str, Any] | None = None, sensor_opts: Mapping[str, Any] | None = None,
             max_ahead: int = 256, dtype: str = "float32", heartbeat_s: float = 0.25,
             progress: Progress | None = None) -> dict[str, Any]:
    """Train the fold model, run one agent process with a sensor per recording of ``held``, stream, count."""
    say = progress or (lambda _m: None)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    model_path = workdir / f"fold-{held}.onnx"
    meta = train_fold(held, train_features, sim, model_path, sim_n=sim_n, seed=seed)
    t_trained = time.monotonic()
    say(f"{held}: fold model trained on {meta.trained_on} ({t_trained - t_start:.1f} s)")

    sensors = {sensor_name(i, r): r for i, r in enumerate(recs)}
    signals = {s: resample(r, MODEL_FS).signal for s, r in sensors.items()}
    topics = proto.Topics("rigout", f"gw-{held}")
    config = write_config(workdir / "gw.toml", broker_url=broker_url, site=topics.site, gateway=topics.gateway,
                          model=model_path, outbox=workdir / "outbox.sqlite", sensors=sensors,
                          heartbeat_s=heartbeat_s, alert=dict(alert or {}), sensor_opts=sensor_opts)
    watch = Watch(broker_url, topics)
    agent_log = workdir / "agent.log"
    tx = MqttLink(broker_url, f"rig-out-tx-{held}", reconnect=(1, 1))
    agent = start_agent(config, agent_log)
    try:
        if not tx.wait_connected(10):
            raise RuntimeError(f"publisher: no broker at {broker_url}")
        if not _wait(lambda: watch.hb is not None, watch, 60, "the agent's first heartbeat", agent):
            raise RuntimeError("no heartbeat from the agent")
        t0_ns = time.time_ns()
        t_stream = time.monotonic()
        sent = stream(tx, watch, signals, t0_ns, dtype=dtype, max_ahead=max_ahead, agent=agent)
        total = sum(sent.values())

        def settled() -> bool:
            return (watch.counter("frames_in") >= total and watch.counter("queue_depth") == 0
                    and watch.counter("pending_windows") == 0 and (watch.hb or {}).get("outbox_pending", 1) == 0)

        drained = _wait(settled, watch, 120, f"the agent to take in and infer all {total} frames", agent)
        watch.pump(1.0)  # alerts published with the last heartbeat's batch
        t_done = time.monotonic()
        hb = watch.hb or {}
    except RuntimeError as exc:
        tail = agent_log.read_text(errors="replace").splitlines()[-12:] if agent_log.exists() else []
        raise RuntimeError(f"{held}: {exc}; {agent_log} ends:\n" + "\n".join(tail)) from exc
    finally:
        rc = stop_agent(agent)
        tx.close()
        watch.close()
    drops = {k: int(v) for k, v in hb.get("drops", {}).items() if v}
    hb_sensors = hb.get("sensors", {})
    results = []
    for s, r in sensors.items():
        mine = [a for a in watch.alerts if a["sensor"] == s]
        raised = [a for a in mine if a["kind"] == "fault" and a["state"] == "raised"]
        first = min(raised, key=lambda a: a["t_ns"]) if raised else None
        truth = fault_type(r.class_name)
        verdict = (first or {}).get("verdict") or {}
        fused = verdict.get("fault_type", first["fault_type"]) if first else None
        hs = hb_sensors.get(s, {})
        results.append({
            "sensor": s, "source": r.source, "class": r.class_name, "type": truth, "rpm": r.rpm, "fs": r.fs,
            "signal_s": round(len(signals[s]) / MODEL_FS, 3), "frames_sent": sent[s],
            "frames_in": hs.get("frames_in"), "windows": hs.get("windows"), "gaps": hs.get("gaps"),
            "raised": first is not None,
            "latency_s": round((first["t_ns"] - t0_ns) / 1e9, 3) if first else None,
            "model_class": first["class"] if first else None,
            "model_type": first["fault_type"] if first else None,
            "probability": first["probability"] if first else None,
            "physics": first.get("physics") if first else None,
            "fused_type": fused, "fused_by": verdict.get("carried_by"),
            "model_right": first is not None and first["fault_type"] == truth,
            "fused_right": first is not None and fused == truth,
            "raised_types": [a["fault_type"] for a in sorted(raised, key=lambda a: a["t_ns"])],
            "anomaly_alerts": sum(a["kind"] == "anomaly" and a["state"] == "raised" for a in mine),
            # the speed the agent used at the end (heartbeat; agents that estimate the speed report it)
            "rpm_in_use": hs.get("rpm_in_use"), "rpm_estimated": hs.get("rpm_estimated"),
            "rpm_source": RPM_SOURCES.get(hs.get("rpm_source", -1)),
        })
    summary = score(results)
    c = hb.get("counters", {})
    return {
        "rig": held, "trained_on": meta.trained_on, "train_rigs": sorted(train_features),
        "model": {"path": str(model_path), "classes": list(meta.classes), "window": meta.window,
                  "aux_input": meta.aux_input, "temperature": meta.metrics.get("temperature")},
        "alert_policy": dict(alert or {}) or "agent defaults",
        "sensor_options": dict(sensor_opts or {}) or "agent defaults",
        "frames_sent": total, "frames_in": int(c.get("frames_in", 0)), "windows": int(c.get("windows", 0)),
        "drained": drained, "drops": drops, "agent_exit": rc,
        "agent_latency_ms": {"p50": c.get("latency_p50_ms"), "p99": c.get("latency_p99_ms")},
        "agent_cpu_percent": hb.get("resources", {}).get("cpu_percent"),
        "seconds": {"train": round(t_trained - t_start, 1), "stream": round(t_done - t_stream, 1),
                    "signal": round(sum(r["signal_s"] for r in results), 1),
                    "total": round(time.monotonic() - t_start, 1)},
        "summary": summary, "recordings": results,
    }


# -- the run -------------------------------------------------------------------------------
def run(rigs: Sequence[str], dirs: Mapping[str, Path], broker_url: str, workdir: Path, *,
        sim_n: int = SIM_RECORDINGS, seed: int = 0, alert: Mapping[str, Any] | None = None,
        sensor_opts: Mapping[str, Any] | None = None, max_ahead: int = 256, dtype: str = "float32", progress: Progress | None = None) -> dict[str, Any]:
    """Every fold in ``rigs``; the training rigs are all the others of ``dirs``."""
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    data = load_rigs(dirs)
    needed = sorted({r for h in rigs for r in data if r != h})  # features only of rigs some fold trains on
    feats = {r: features_of(data[r]) for r in needed}
    sim = features_of(simulated(sim_n, seed)) if sim_n > 0 else None
    say(f"features of {', '.join(needed)} + {sim_n} simulated bearings: {time.monotonic() - t0:.1f} s")
    folds = {}
    for held in rigs:
        folds[held] = run_fold(held, data[held], {r: f for r, f in feats.items() if r != held}, sim, broker_url,
                               workdir / held, sim_n=sim_n, seed=seed, alert=alert, sensor_opts=sensor_opts,
                               max_ahead=max_ahead,
                               dtype=dtype, progress=say)
        say(table_row(held, folds[held]))
    return {"benchmark": "rig_out_agent", "protocol": "leave-one-rig-out through edgevib agent on Mosquitto",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "sim_recordings": sim_n, "seed": seed, "frame": FRAME, "dtype": dtype,
            "stream_rate_hz": MODEL_FS, "target_s": TARGET_S, "folds": folds, "overall": score(
                [r for f in folds.values() for r in f["recordings"]]),
            "seconds": round(time.monotonic() - t0, 1)}


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "-"


HEADER = (f"{'held out':<9} {'recs':>4} {'raised':>12} {'<=2s':>12} {'latency p50/max s':>18} "
          f"{'model type':>12} {'fused type':>12} {'unk':>4} {'healthy FA':>10} {'drops':>5}")


def table_row(rig: str, fold: Mapping[str, Any]) -> str:
    s = fold["summary"] if "summary" in fold else fold
    lat = s["latency_s"]
    lat_s = f"{lat['p50']:.2f}/{lat['max']:.2f}" if lat["p50"] is not None else "-"
    nf = s["fault_recordings"]
    drops = sum(fold.get("drops", {}).values()) if "drops" in fold else ""
    return (f"{rig:<9} {s['recordings']:>4} {_pct(s['raised'], nf):>12} {_pct(s['raised_within_target'], nf):>12} "
            f"{lat_s:>18} {_pct(s['model_type_right'], nf):>12} {_pct(s['fused_type_right'], nf):>12} "
            f"{s['fused_unknown']:>4} {str(s['healthy_false_alerts']) + '/' + str(s['healthy_recordings']):>10} "
            f"{drops!s:>5}")


def _speeds(fold: Mapping[str, Any]) -> str:
    est = [r for r in fold["recordings"] if r["rpm_source"] == "estimated" and r["rpm_in_use"]]
    if not est:
        return "speed in use: configured"
    off = max(abs(r["rpm_in_use"] / r["rpm"] - 1) * 100 for r in est)
    return f"speed in use estimated for {len(est)}/{len(fold['recordings'])} (max {off:.1f} % off the recording's rpm)"


def report_text(res: Mapping[str, Any]) -> str:
    lines = [f"rig-out through the agent  {res['date']}  load avg {res['load_avg']}  cpus {res['cpus']}",
             f"fold models: other rigs + {res['sim_recordings']} simulated bearings (seed {res['seed']}); "
             f"streamed at 12 kHz (resampled by the publisher), {res['frame']}-sample {res['dtype']} frames",
             HEADER]
    for rig, f in res["folds"].items():
        lines.append(table_row(rig, f))
    lines.append(table_row("all", res["overall"]))
    lines.append("")
    lines.append("per class (raised / model type right / fused type right, of recordings):")
    for rig, f in res["folds"].items():
        pc = "  ".join(f"{t} {v['raised']}/{v['model_right']}/{v['fused_right']} of {v['recordings']}"
                       for t, v in f["summary"]["per_class"].items())
        lines.append(f"  {rig:<8} {pc}   [{f['trained_on']}; policy {f['alert_policy']}; "
                     f"sensors {f['sensor_options']}; {_speeds(f)}; "
                     f"{f['frames_in']}/{f['frames_sent']} frames, {f['summary']['streamed_complete']}/"
                     f"{f['summary']['recordings']} recordings complete, drops {f['drops'] or 0}, "
                     f"stream {f['seconds']['stream']} s for {f['seconds']['signal']} s of signal]")
    wrong = [(rig, r) for rig, f in res["folds"].items() for r in f["recordings"]
             if (r["type"] != "normal" and not r["fused_right"]) or (r["type"] == "normal" and r["raised"])]
    if wrong:
        lines.append("missed, wrong or false alerts (recording: truth -> model / physics / fused, latency):")
        for rig, r in wrong:
            lines.append(f"  {rig:<8} {r['source']:<32} {r['type']:<6} -> {r['model_type']} / {r['physics']} / "
                         f"{r['fused_type']}" + (f"  {r['latency_s']:.2f} s" if r["raised"] else "  (no alert)"))
    o = res["overall"]
    lines.append(f"targets: every fault recording raises within {TARGET_S:g} s: "
                 f"{o['raised_within_target']}/{o['fault_recordings']}; fused type right >= 90 %: "
                 f"{100 * o['rates']['fused_type_right']:.0f} %; no fault alert on a healthy recording: "
                 f"{o['healthy_false_alerts']} of {o['healthy_recordings']} alerted")
    lines.append(f"wall time {res['seconds']} s")
    return "\n".join(lines)


def _alert_arg(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        k, _, v = it.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rigs", default=",".join(RIGS), help=f"held-out rigs, comma-separated (default {','.join(RIGS)})")
    ap.add_argument("--cwru", type=Path, default=None, help="CWRU folder (default ../shared/cwru)")
    ap.add_argument("--bearings", type=Path, default=None, help="other rigs' folder (default ../shared/bearings)")
    ap.add_argument("--sim", type=int, default=SIM_RECORDINGS, help="simulated bearings in every fold's training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alert", action="append", default=[], metavar="KEY=VALUE",
                    help="[alert] setting for the agent (default: the agent's defaults), e.g. k=2")
    ap.add_argument("--sensor", action="append", default=[], metavar="KEY=VALUE",
                    help="extra key in every [sensors.NAME] table, e.g. speed_estimate=false")
    ap.add_argument("--max-ahead", type=int, default=256, help="frames sent ahead of the agent's intake")
    ap.add_argument("--dtype", choices=("float32", "int16"), default="float32")
    ap.add_argument("--workdir", type=Path, default=None, help="keep models, configs and agent logs here")
    ap.add_argument("--json", type=Path, default=None, help="write the full result here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rigs = [r.strip() for r in args.rigs.split(",") if r.strip()]
    unknown = set(rigs) - set(RIGS)
    if unknown:
        ap.error(f"unknown rigs {sorted(unknown)}; use some of {', '.join(RIGS)}")
    dirs = rig_dirs(args.cwru, args.bearings)
    with tempfile.TemporaryDirectory(prefix="rig-out-agent-") as tmp, MosquittoProcess() as broker:
        work = args.workdir or Path(tmp)
        res = run(rigs, dirs, broker.url, work, sim_n=args.sim, seed=args.seed, alert=_alert_arg(args.alert),
                  sensor_opts=_alert_arg(args.sensor),
                  max_ahead=args.max_ahead, dtype=args.dtype, progress=lambda m: print(m, flush=True))
    print()
    print(report_text(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
