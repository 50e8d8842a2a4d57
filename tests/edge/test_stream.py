"""``edgevib stream --replay``: a recording is streamed from its samples and rate alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgevib.edge.errors import EdgeError
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.stream import load_replay, stream_recording

from edgevib.protocol import Topics
from edgevib.protocol.frames import decode


def _npz(path: Path, **keys: object) -> Path:
    np.savez(path, **keys)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("meta", [
    {"label": "OR"},  # a fault-type label with no size (other rigs): refused as 'fault size 0.0 in'
    {"label": "IR", "size_in": 0.0, "rpm": 1500.0},
    {"label": "cage"},  # not a class at all
    {},  # no label and no speed
])
def test_replay_needs_only_samples_and_rate(tmp_path: Path, meta: dict[str, object]) -> None:
    x = np.sin(np.arange(10_000) / 7).astype(np.float32)
    rec = load_replay(_npz(tmp_path / "rig.npz", signal=x, fs=np.float64(25_600.0), **meta))
    assert rec.fs == 25_600.0 and rec.label == meta.get("label", "")
    np.testing.assert_array_equal(rec.signal, x)
    bus = MemoryBus()
    rx = MemoryLink(bus, "rx")
    rx.subscribe("#")
    assert stream_recording(MemoryLink(bus, "tx"), Topics("s", "g"), "de", rec, frame=4096) == 2
    frames = [decode(m.payload) for m in iter(lambda: rx.poll(0), None)]
    assert [f.seq for f in frames] == [0, 1] and {f.fs for f in frames} == {25_600.0}
    np.testing.assert_array_equal(np.concatenate([f.samples for f in frames]), x[:8192])


@pytest.mark.parametrize("keys, match", [
    ({"fs": np.float64(12_000.0)}, "signal"),
    ({"signal": np.zeros(10, np.float32)}, "fs"),
    ({"signal": np.zeros(10, np.float32), "fs": np.float64(-1.0)}, "fs"),
    ({"signal": np.array([0.0, np.nan], np.float32), "fs": np.float64(12_000.0)}, "NaN"),
])
def test_replay_still_refuses_what_it_cannot_stream(tmp_path: Path, keys: dict[str, object], match: str) -> None:
    with pytest.raises(EdgeError, match=match):
        load_replay(_npz(tmp_path / "bad.npz", **keys))
