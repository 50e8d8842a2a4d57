"""``edgevib stream`` against a real Mosquitto: frames arrive decodable, in order, at the file's rate."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.mqtt import MqttLink
from edgevib.models.data import load_recording

from edgevib import protocol as proto
from edgevib.broker import MosquittoProcess
from edgevib.protocol.frames import decode

pytestmark = pytest.mark.integration
T = proto.Topics("plant", "gw")


def _collect(link: MqttLink, n: int, timeout: float = 20.0) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        m = link.poll(0.1)
        if m is not None:
            out.append((m.topic, m.payload))
    return out


def _stream(broker: MosquittoProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgevib.cli", "-q", "stream", "--broker", broker.url,
                           "--site", "plant", "--gateway", "gw", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.data
def test_replay_sends_the_recording_at_its_own_rate(broker: MosquittoProcess, cwru_dir: Path) -> None:
    rx = MqttLink(broker.url, "rx", connect=False)
    rx.subscribe(T.raw_all)
    rx.start()
    assert rx.wait_connected(5)
    path = sorted(cwru_dir.glob("normal_*.npz"))[0]
    r = _stream(broker, "--sensor", "n", "--replay", str(path), "--frame", "8192", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    rec = load_recording(path)
    n = len(rec.signal) // 8192
    got = _collect(rx, n)
    rx.close()
    assert len(got) == n and {t for t, _ in got} == {T.raw("n")}
    frames = [decode(p) for _, p in got]
    assert [f.seq for f in frames] == list(range(n)) and {f.fs for f in frames} == {rec.fs} == {48000.0}
    np.testing.assert_array_equal(np.concatenate([f.samples for f in frames]), rec.signal[: n * 8192])
    steps = np.diff([f.t0_ns for f in frames])
    assert np.allclose(steps, 8192 / 48000 * 1e9, atol=1)


def test_simulate_names_n_sensors_and_paces_in_real_time(broker: MosquittoProcess) -> None:
    rx = MqttLink(broker.url, "rx", connect=False)
    rx.subscribe(T.raw_all)
    rx.start()
    assert rx.wait_connected(5)
    t0 = time.monotonic()
    r = _stream(broker, "--sensor", "p", "--simulate", "3", "--fault", "OR", "--duration", "1.0",
                "--frame", "2048", "--realtime")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    got = _collect(rx, 15)
    rx.close()
    assert sorted({t for t, _ in got}) == [T.raw(f"p-{i}") for i in range(3)]
    assert len(got) == 3 * (12000 // 2048)
    assert took >= 0.8, "real-time pacing sends 1 s of signal in about 1 s"


def test_bad_usage_is_exit_code_2_with_the_fix(broker: MosquittoProcess) -> None:
    r = _stream(broker, "--sensor", "x")
    assert r.returncode == 2 and "--replay" in r.stderr
    r = _stream(broker, "--sensor", "a/b", "--simulate", "1")
    assert r.returncode != 0 and "sensor" in r.stderr


def test_replay_of_a_recording_without_fault_size(broker: MosquittoProcess, tmp_path: Path) -> None:
    # A fault-type recording (label OR, no size, no speed): streaming must not need its labels.
    x = np.sin(np.arange(20_000) / 5).astype(np.float32)
    path = tmp_path / "rig_or.npz"
    np.savez(path, signal=x, fs=np.float64(12_000.0), label="OR")
    rx = MqttLink(broker.url, "rx-or", connect=False)
    rx.subscribe(T.raw_all)
    rx.start()
    assert rx.wait_connected(5)
    r = _stream(broker, "--sensor", "or", "--replay", str(path), "--frame", "4096", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    got = _collect(rx, 4)
    rx.close()
    assert len(got) == 4 and {t for t, _ in got} == {T.raw("or")}
    np.testing.assert_array_equal(np.concatenate([decode(p).samples for _, p in got]), x[: 4 * 4096])
