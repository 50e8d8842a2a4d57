"""Metrics: counters, per-reason drops, percentiles, injectable clock, resources."""

from __future__ import annotations

import threading

import numpy as np
from edgevib.edge.metrics import Metrics


def test_counters_per_sensor_and_drops() -> None:
    m = Metrics()
    m.inc("frames_in", sensor="a")
    m.inc("frames_in", 2, sensor="b")
    m.drop("bad_crc", sensor="a")
    m.drop("truncated")
    snap = m.snapshot()
    assert snap["counters"] == {"frames_in": 3, "dropped": 2}
    assert snap["drops"] == {"bad_crc": 1, "truncated": 1}
    assert snap["sensors"] == {"a": {"frames_in": 1, "dropped": 1}, "b": {"frames_in": 2}}


def test_percentiles_match_numpy_over_a_bounded_window(rng: np.random.Generator) -> None:
    m = Metrics(window=100)
    xs = rng.exponential(5.0, 300)
    for x in xs:
        m.observe("lat", x)
    p = m.percentiles("lat")
    assert p["n"] == 100
    assert np.isclose(p["p99"], np.percentile(xs[-100:], 99))
    assert m.percentiles("none") == {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}


def test_uptime_uses_injected_clock() -> None:
    t = [100.0]
    m = Metrics(clock=lambda: t[0])
    t[0] = 112.5
    assert m.uptime() == 12.5


def test_resources_report_this_process() -> None:
    r = Metrics().resources()
    assert 5 < r["rss_mb"] < 4096 and r["threads"] >= 1 and r["cpu_percent"] >= 0


def test_concurrent_increments_are_not_lost() -> None:
    m = Metrics()

    def work() -> None:
        for _ in range(5000):
            m.inc("x")

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert m.counters["x"] == 20000
