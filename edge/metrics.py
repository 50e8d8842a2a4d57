"""The agent's counters, latency percentiles and resource use, for the heartbeat.

Thread-safe; the clock is injectable so uptime and rates are testable.

>>> m = Metrics(clock=lambda: 10.0)
>>> m.inc("frames_in"); m.drop("bad_crc"); m.drop("bad_crc")
>>> for ms in (1, 2, 3, 100):
...     m.observe("inference_ms", ms)
>>> m.counters["frames_in"], m.drops["bad_crc"], m.percentiles("inference_ms")["p50"]
(1, 2, 2.5)
>>> m = Metrics(max_sensors=2)
>>> for s in ("a", "b", "c", "d", "a"):
...     m.inc("frames_in", sensor=s)
>>> sorted(m.snapshot()["sensors"].items())
[('_other', {'frames_in': 2}), ('a', {'frames_in': 2}), ('b', {'frames_in': 1})]
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable

import numpy as np
import psutil

# The one label for sensors past ``max_sensors``: a valid sensor name (edgevib/protocol), never
# a real one by convention, so the heartbeat stays bounded whatever names arrive.
OTHER = "_other"


class Metrics:
    """Counters (global and per sensor), drops per reason, and recent samples of latencies.

    At most ``max_sensors`` sensor labels: counts for further sensors go to :data:`OTHER`.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, window: int = 2048,
                 max_sensors: int | None = None) -> None:
        self.clock = clock
        self.max_sensors = max_sensors
        self.started = clock()
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.sensors: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._samples: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._lock = threading.Lock()
        self._proc = psutil.Process(os.getpid())
        self._proc.cpu_percent(None)  # primes the CPU meter: the next call measures since now

    def _label(self, sensor: str) -> str:  # under self._lock
        if self.max_sensors is None or sensor in self.sensors or len(self.sensors) < self.max_sensors:
            return sensor
        return OTHER

    def inc(self, name: str, n: int = 1, sensor: str | None = None) -> None:
        with self._lock:
            self.counters[name] += n
            if sensor is not None:
                self.sensors[self._label(sensor)][name] += n

    def inc_sensor(self, sensor: str, name: str, n: int = 1) -> None:
        """Count for ``sensor`` only (the global counter was counted already)."""
        with self._lock:
            self.sensors[self._label(sensor)][name] += n

    def drop(self, reason: str, sensor: str | None = None) -> None:
        """Count one dropped message under ``reason`` (a small fixed vocabulary)."""
        with self._lock:
            self.drops[reason] += 1
            self.counters["dropped"] += 1
            if sensor is not None:
                self.sensors[self._label(sensor)]["dropped"] += 1

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self._samples[name].append(float(value))

    def percentiles(self, name: str) -> dict[str, float]:
        """p50/p99/max of the recent samples of ``name`` (zeros when none yet)."""
        with self._lock:
            xs = np.fromiter(self._samples[name], dtype=np.float64)
        if xs.size == 0:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
        p50, p99 = np.percentile(xs, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": float(xs.max()), "n": int(xs.size)}

    def uptime(self) -> float:
        return max(0.0, self.clock() - self.started)

    def resources(self) -> dict[str, float]:
        """CPU (% of one core since the last call), RSS (MB) and thread count of this process."""
        with self._proc.oneshot():
            return {"cpu_percent": float(self._proc.cpu_percent(None)),
                    "rss_mb": self._proc.memory_info().rss / 2**20,
                    "threads": float(self._proc.num_threads())}

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"counters": dict(self.counters), "drops": dict(self.drops),
                    "sensors": {k: dict(v) for k, v in self.sensors.items()}}
