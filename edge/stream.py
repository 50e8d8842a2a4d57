"""Publish vibration frames: a recorded file replayed, or simulated bearings.

Frames go out at QoS 0 on ``edgevib/v1/<site>/<gateway>/sensors/<sensor>/raw`` at the
source's own sample rate (the agent resamples). ``rate`` paces the stream against
signal time: 1.0 is real time, 2.0 twice as fast, 0 as fast as the link takes it.
Each frame's ``t0`` is the stream start (wall clock) plus its signal time.

>>> from edgevib.edge.memory import MemoryBus, MemoryLink
>>> bus = MemoryBus(); rx = MemoryLink(bus, "rx"); rx.subscribe("#")
>>> n = stream_arrays(MemoryLink(bus, "tx"), Topics("s", "g"), {"de": np.zeros(10_000, np.float32)},
...                   fs=12000.0, frame=4096)
>>> n, rx.stats()["received"]
(2, 2)
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from edgevib.edge.errors import BrokerUnavailable, EdgeError
from edgevib.edge.sink import Sink
from edgevib.models.errors import DataError
from edgevib.models.simulate import Simulator

from edgevib.extras import require
from edgevib.protocol import Topics
from edgevib.protocol.frames import Frame, FrameDtype, encode

if TYPE_CHECKING:  # edgevib.models.data needs scipy, which an edge-only install lacks
    from edgevib.models.data import Recording

log = logging.getLogger(__name__)


class Pacer:
    """Sleeps so that signal time ``s`` is sent at ``start + s / rate`` (no sleeping for rate 0)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.start = clock()

    def wait(self, signal_s: float) -> None:
        if self.rate > 0:
            ahead = self.start + signal_s / self.rate - self.clock()
            if ahead > 0:
                self.sleep(ahead)


def _send(sink: Sink, topic: str, frame: Frame, dtype: FrameDtype) -> bool:
    return sink.publish(topic, encode(frame, dtype), qos=0) is not None


def stream_arrays(sink: Sink, topics: Topics, signals: Mapping[str, npt.NDArray[np.float32]], *, fs: float,
                  frame: int = 4096, dtype: FrameDtype = "float32", rate: float = 0.0,
                  t0_ns: int | None = None, pacer: Pacer | None = None) -> int:
    """Send whole frames of each sensor's signal, interleaved by time; returns frames sent."""
    t0 = time.time_ns() if t0_ns is None else t0_ns
    pace = pacer or Pacer(rate)
    n = min(len(x) for x in signals.values()) // frame
    sent = 0
    for i in range(n):
        pace.wait(i * frame / fs)
        for name, x in signals.items():
            f = Frame(i, t0 + round(i * frame * 1e9 / fs), fs, x[i * frame:(i + 1) * frame])
            sent += _send(sink, topics.raw(name), f, dtype)
    if sent < n * len(signals):
        log.warning("stream: %d of %d frames not sent (link offline)", n * len(signals) - sent, n * len(signals))
    return sent


@dataclass(frozen=True, eq=False)
class Replay:
    """What streaming a recording needs: its samples and their rate (``label`` is for display only)."""

    signal: npt.NDArray[np.float32]
    fs: float
    source: str
    label: str = ""


def _load_recording(p: Path) -> Recording:
    # CWRU .mat files are read with scipy.io: the `train` extra, not the gateway's `edge`
    require("scipy", extra="train", feature="replaying a CWRU .mat recording (a .npz needs no scipy)")
    from edgevib.models.data import load_recording

    return load_recording(p, label="normal", rpm=1.0)


def load_replay(path: str | Path) -> Replay:
    """Samples and rate of a ``.npz`` (keys ``signal``, ``fs``) or CWRU ``.mat`` recording.

    Streaming must not need labels: a fault size, a known class or a shaft speed are what a
    model's training and evaluation check (:func:`edgevib.models.data.load_recording`), not
    what a publisher sends. So an ``.npz`` labelled ``OR`` with no size, or with no label at
    all, streams; only a missing or bad signal or rate is refused.
    """
    p = Path(path)
    if p.suffix == ".mat":
        try:
            # A CWRU .mat gets its rate from its name or the manifest; the overrides only stop
            # load_recording from refusing an unknown label or speed, which are not streamed.
            rec = _load_recording(p)
        except DataError as exc:
            raise EdgeError("edge.stream", str(exc), "pass a readable recording with a known sample rate") from exc
        return Replay(rec.signal, rec.fs, p.name)
    if p.suffix != ".npz":
        raise EdgeError("edge.stream", f"--replay {str(p)!r}", "pass a .npz (signal, fs) or a CWRU .mat recording")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise EdgeError("edge.stream", f"{str(p)!r} is not a readable .npz ({exc})",
                        "pass a .npz with keys signal and fs") from exc
    missing = [k for k in ("signal", "fs") if k not in keys]
    if missing:
        raise EdgeError("edge.stream", f"{p.name!r} lacks {' and '.join(missing)}",
                        "write the samples as 'signal' and the sample rate in Hz as 'fs'")
    try:
        fs = float(keys["fs"])
        signal = np.asarray(keys["signal"], dtype=np.float32).ravel()
    except (TypeError, ValueError) as exc:
        raise EdgeError("edge.stream", f"{p.name!r}: signal or fs is not numeric ({exc})",
                        "write numbers") from exc
    if not (math.isfinite(fs) and 0 < fs <= 1e7):
        raise EdgeError("edge.stream", f"{p.name!r}: fs={fs!r}", "write the sample rate in Hz, 0 < fs <= 1e7")
    if signal.size == 0 or not np.all(np.isfinite(signal)):
        raise EdgeError("edge.stream", f"{p.name!r}: signal is empty or holds NaN/inf", "use an intact recording")
    label = str(keys["label"]) if "label" in keys else ""
    return Replay(signal, fs, p.name, label)


def stream_recording(sink: Sink, topics: Topics, sensor: str, rec: Recording | Replay, **kw: object) -> int:
    """Replay a recording at its own rate (``kw`` as :func:`stream_arrays`)."""
    return stream_arrays(sink, topics, {sensor: rec.signal}, fs=rec.fs, **kw)  # type: ignore[arg-type]


def stream_simulated(sink: Sink, topics: Topics, sensors: Sequence[str], fault: str, *, duration_s: float,
                     onset_s: float = 0.0, fs: float = 12000.0, rpm: float = 1797.0, frame: int = 4096,
                     dtype: FrameDtype = "float32", rate: float = 1.0, seed: int = 0,
                     t0_ns: int | None = None) -> int:
    """Simulated bearings (one seeded :class:`Simulator` per sensor), chunk by chunk; ``duration_s=0``: endless."""
    sims = {s: Simulator(fault, fs=fs, rpm=rpm, onset_s=onset_s, seed=seed + i) for i, s in enumerate(sensors)}
    t0 = time.time_ns() if t0_ns is None else t0_ns
    pace = Pacer(rate)
    sent = 0
    n_frames = int(duration_s * fs) // frame if duration_s > 0 else None
    for i in itertools.count() if n_frames is None else range(n_frames):
        pace.wait(i * frame / fs)
        for name, sim in sims.items():
            f = Frame(i, t0 + round(i * frame * 1e9 / fs), fs, sim.next_samples(frame))
            sent += _send(sink, topics.raw(name), f, dtype)
    return sent


def wait_connected(link: object, timeout: float) -> None:
    """Raise :class:`BrokerUnavailable` if ``link`` (an MqttLink) is not connected in time."""
    waiter = getattr(link, "wait_connected", None)
    if waiter is not None and not waiter(timeout):
        raise BrokerUnavailable("edge.stream", f"no broker at {getattr(link, 'url', '?')} after {timeout:g} s",
                                "start Mosquitto or pass --broker mqtt://HOST:PORT")
