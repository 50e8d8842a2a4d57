"""Hostile input against a real agent (issue 19): memory, drops, heartbeat size, alert latency.

A private Mosquitto (no message size limit: the agent must protect itself), ``edgevib
agent`` as its own process, and a flood publisher process sending garbage as fast as one
Python publisher can for ``--seconds``: invented sensor names (garbage, and valid frames
on up to 5,000 names against ``max_sensors`` 1,000), empty and truncated frames, 70 kB
zero blocks, a 350 kB JSON frame, 1 MB blocks, NaN samples, bad ``cmd`` and ``models``
payloads, a malformed sensor name. Meanwhile a real inner-race recording streams in real
time on sensor ``real``. Prints RSS before/peak/after, drops by reason, heartbeat bytes and
the alert latency (fault signal start -> alert at the subscriber).

    .venv/bin/python benchmarks/flood.py [--seconds 10] [--cwru ../shared/cwru]

tests/edge/integration/test_flood.py runs :func:`run_scenario` and asserts the bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from edgevib.edge.limits import max_packet
from edgevib.edge.mqtt import MqttLink
from edgevib.edge.stream import stream_arrays, stream_recording
from edgevib.models.data import load_recording
from edgevib.models.simulate import simulate

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.frames import HEADER, MAGIC, Frame, encode

T = proto.Topics("plant", "gw")
INVENTED = 5000  # distinct invented sensor names (max_sensors is 1,000)


def _nan_frame() -> bytes:
    """A well-formed float32 binary frame (right length and CRC) whose samples are NaN."""
    body = np.full(1024, np.nan, "<f4").tobytes()
    head = HEADER.pack(MAGIC, 1, 2, 0, 1.0, 12000.0, 0, 0, 1024, 0)
    crc = zlib.crc32(body, zlib.crc32(head[:-4]))
    return head[:-4] + struct.pack("<I", crc) + body


def garbage_kinds(seed: int = 0) -> dict[str, tuple[str, bytes]]:
    """kind -> (topic or ``"raw"`` for an invented sensor's frame topic, payload)."""
    rng = np.random.default_rng(seed)
    good = encode(Frame(0, 0, 12000.0, rng.normal(0, 0.1, 1024).astype(np.float32)), "int16")
    tiny = encode(Frame(0, 0, 12000.0, rng.normal(0, 0.1, 64).astype(np.float32)), "int16")
    json_350k = b'{"v":1,"seq":0,"t0":0,"fs":12000,"samples":[' + b"0.0," * 87_500 + b"0.0]}"
    return {
        "valid_invented": ("raw", tiny),  # decodable: admitted up to max_sensors, then too_many_sensors
        "empty": ("raw", b""),
        "truncated": ("raw", good[:100]),
        "zeros_70k": ("raw", bytes(70_000)),
        "json_350k": ("raw", json_350k),
        "random_1m": ("raw", rng.bytes(1_000_000)),
        "nan_samples": ("raw", _nan_frame()),
        "bad_json": ("raw", b'{"v":1,"seq":'),
        "bad_cmd_json": (T.cmd, b"{not json"),
        "bad_cmd": (T.cmd, b'{"cmd":"reboot"}'),
        "bad_models": (T.models, b'{"schema":"nope"}'),
        "bad_name": (f"{T.base}/sensors/bad name/raw", good),
        "cmd_263k": (T.cmd, b"{" + b" " * 262_500),  # over the protocol limit, under the packet limit
    }


def over_packet_limit(max_frame_samples: int = 65_536) -> set[str]:
    """Kinds the broker never sends the agent: over its MQTT 5 maximum packet size."""
    return {k for k, (_t, p) in garbage_kinds().items() if len(p) + 300 > max_packet(max_frame_samples)}


def publish_flood(url: str, seconds: float, seed: int = 0) -> dict[str, int]:
    """Publish garbage at QoS 0 for ``seconds`` as fast as possible; messages sent, by kind."""
    kinds = list(garbage_kinds(seed).items())
    link = MqttLink(url, f"flood-{os.getpid()}", reconnect=(1, 1), max_pending=100)
    if not link.wait_connected(10):
        raise SystemExit(f"flood: no broker at {url}")
    client = link._client  # noqa: SLF001 - a raw paho publish: the flooder needs its message info
    sent: Counter[str] = Counter()
    i, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        kind, (topic, payload) = kinds[i % len(kinds)]
        if topic == "raw":
            topic = T.raw(f"inv{(i // len(kinds)) % INVENTED}")
        info = client.publish(topic, payload, qos=0)
        if info.rc == 0:
            sent[kind] += 1
        if i % 64 == 63:  # bounded backlog in paho's (unbounded for QoS 0) send queue
            info.wait_for_publish(5)
        i += 1
    info.wait_for_publish(10)
    link.close()
    return dict(sent)


class Cloud:
    """Collects the gateway's heartbeats (with their size) and alerts (with arrival time)."""

    def __init__(self, url: str) -> None:
        self.link = MqttLink(url, "flood-cloud", reconnect=(1, 1), connect=False)
        for topic in (T.alerts, T.heartbeat):  # not .../#: that would subscribe to the flood too
            self.link.subscribe(topic, qos=1)
        self.link.start()
        if not self.link.wait_connected(10):
            raise RuntimeError(f"cloud subscriber: no broker at {url}")
        self.heartbeats: list[dict[str, Any]] = []
        self.hb_bytes: list[int] = []
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            m = self.link.poll(0.05)
            if m is None:
                continue
            with self._lock:
                if m.topic == T.heartbeat:
                    self.heartbeats.append(proto.parse_heartbeat(m.payload))
                    self.hb_bytes.append(len(m.payload))
                elif m.topic == T.alerts:
                    self.alerts.append((time.time(), proto.parse_alert(m.payload)))

    def last(self) -> dict[str, Any]:
        with self._lock:
            return self.heartbeats[-1] if self.heartbeats else {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.link.close()


def _wait(cond: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the agent exited ({proc.returncode}) waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _rss_mb(p: psutil.Process, n: int = 5, every: float = 0.1) -> float:
    xs = []
    for _ in range(n):
        xs.append(p.memory_info().rss / 2**20)
        time.sleep(every)
    return float(np.median(xs))


def run_scenario(broker_url: str, model: Path, outbox: Path, cwru: Path, seconds: float = 10.0,
                 fault_after_s: float = 2.0) -> dict[str, Any]:
    """The flood with a real fault streaming on ``real``; returns the figures (see module doc)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEVIB_ALERT__COOLDOWN_S": "0"}
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgevib.cli", "-q", "agent", "--broker", broker_url, "--site", T.site,
         "--gateway", T.gateway, "--model", str(model), "--outbox", str(outbox), "--heartbeat", "0.5"], env=env)
    cloud = Cloud(broker_url)
    tx = MqttLink(broker_url, "flood-sensor", reconnect=(1, 1))
    flood: subprocess.Popen[bytes] | None = None
    try:
        _wait(lambda: bool(cloud.last()), 60, "the agent's first heartbeat", agent)
        proc = psutil.Process(agent.pid)
        # warm up the model (its arenas) on a healthy 12 kHz signal of another sensor
        warm = stream_arrays(tx, T, {"warm": simulate("normal", duration_s=3.0, seed=1).astype(np.float32)},
                             fs=12000.0, frame=1024, dtype="int16")
        _wait(lambda: cloud.last().get("counters", {}).get("frames_in", 0) >= warm
              and cloud.last()["counters"].get("pending_windows") == 0, 30, "the warm-up frames inferred", agent)
        time.sleep(1.0)
        rss_before = _rss_mb(proc)
        n_hb = len(cloud.heartbeats)
        peak = [rss_before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                try:
                    peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
                except psutil.Error:
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        flood = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--publish-only", "--broker",
                                  broker_url, "--seconds", str(seconds)], stdout=subprocess.PIPE, env=env)
        time.sleep(fault_after_s)
        rec = load_recording(cwru / "IR007_load0_12k_DE_105.npz")
        rec = type(rec)(rec.signal[: 12000 * 4], rec.fs, rec.rpm, rec.label, rec.size_in)
        t0 = time.time_ns()
        streamer = threading.Thread(target=stream_recording, args=(tx, T, "real", rec),
                                    kwargs={"frame": 1024, "dtype": "int16", "rate": 1.0, "t0_ns": t0}, daemon=True)
        streamer.start()

        def real_alert() -> tuple[float, dict[str, Any]] | None:
            with cloud._lock:  # noqa: SLF001 - same module
                got = [(t, a) for t, a in cloud.alerts if a["sensor"] == "real" and a["kind"] == "fault"
                       and a["state"] == "raised"]
            return got[0] if got else None

        _wait(lambda: real_alert() is not None, seconds + 20, "the real sensor's fault alert", agent)
        alert_t, alert = real_alert()  # type: ignore[misc]
        out, _ = flood.communicate(timeout=seconds + 60)
        sent = json.loads(out)
        streamer.join(10)

        seen: list[Any] = [None, -1]  # the last (counts, heartbeat number) looked at

        def drained() -> bool:
            # An empty inbox is not the end: the broker may still hold part of the flood for the
            # agent. Drained = inbox empty and the counts the same in two successive heartbeats.
            hb = cloud.last()
            c, n = hb.get("counters", {}), len(cloud.heartbeats)
            counts = (tuple(c.get(k) for k in ("received", "frames_in", "dropped")), sorted(hb.get("drops", {}).items()))
            same = n > seen[1] >= 0 and counts == seen[0]
            if n != seen[1]:
                seen[:] = [counts, n]
            return bool(same and c.get("queue_depth") == 0 and c.get("pending_windows") == 0 and n > n_hb + 2)
        _wait(drained, 60, "the agent to drain its inbox", agent)
        time.sleep(2.0)
        rss_after = _rss_mb(proc, n=10)
        sampling.set()
        sampler.join(2)
        hb_before = cloud.last()
        time.sleep(1.2)  # one more heartbeat: the counters no longer move
        hb = cloud.last()
        with cloud._lock:  # noqa: SLF001
            hb_bytes = max(cloud.hb_bytes)
        return {
            "rss_mb": {"before": round(rss_before, 1), "peak": round(peak[0], 1), "after": round(rss_after, 1)},
            "sent": sent, "sent_total": sum(sent.values()), "flood_s": seconds,
            # the flood's messages under the packet limit, and the warm-up and real frames
            "expected_arrived": sum(n for k, n in sent.items() if k not in over_packet_limit())
            + warm + len(rec.signal) // 1024,
            "drops": hb["drops"], "counters": hb["counters"], "stable": all(hb_before["counters"].get(k) == hb["counters"].get(k) for k in ("received", "frames_in", "dropped"))
            and hb_before["drops"] == hb["drops"],
            "heartbeat_bytes_max": hb_bytes, "heartbeat_sensors": len(hb["sensors"]),
            "alert": alert, "alert_latency_s": round(alert_t - t0 / 1e9, 3),
            "alert_signal_s": round((int(alert["t_ns"]) - t0) / 1e9, 3),
            "alert_created_s": round((int(alert["created_ns"]) - t0) / 1e9, 3),
            "agent_alive": agent.poll() is None,
        }
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait(10)
        tx.close()
        cloud.close()
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--cwru", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "cwru")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--publish-only", action="store_true", help="only publish garbage (the flood process)")
    ap.add_argument("--broker", default="")
    args = ap.parse_args()
    if args.publish_only:
        print(json.dumps(publish_flood(args.broker, args.seconds)))
        return 0
    import tempfile

    from edgevib.edge.cli import model_path

    with MosquittoProcess() as broker, tempfile.TemporaryDirectory() as tmp:
        r = run_scenario(broker.url, args.model or model_path(""), Path(tmp) / "ob.sqlite", args.cwru, args.seconds)
    rate = r["sent_total"] / r["flood_s"]
    print(f"flood: {r['sent_total']:,} messages in {r['flood_s']:g} s ({rate:,.0f}/s): {r['sent']}")
    print(f"agent RSS MB: before {r['rss_mb']['before']}, peak {r['rss_mb']['peak']}, after {r['rss_mb']['after']}")
    print(f"drops by reason: {dict(sorted(r['drops'].items()))}; not sent to the agent by the broker "
          f"(over its maximum packet size): {r['sent_total'] - r['expected_arrived']:,}")
    print(f"heartbeat: max {r['heartbeat_bytes_max']:,} bytes, {r['heartbeat_sensors']} sensors listed of "
          f"{r['counters'].get('sensors')}")
    print(f"real IR007 alert: {r['alert_latency_s']} s after the fault signal started "
          f"(window end at {r['alert_signal_s']} s of signal, alert made at {r['alert_created_s']} s), class {r['alert']['class']}, "
          f"physics {r['alert']['physics']}; agent latency p99 {r['counters'].get('latency_p99_ms'):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
