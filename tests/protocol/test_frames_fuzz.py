"""Fuzz decode: arbitrary bytes and mutated valid frames raise only FrameError."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevib.protocol.errors import FRAME_REASONS, FrameError
from edgevib.protocol.frames import Frame, decode, encode, encode_json

_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)


def _decode_or_reason(payload: bytes) -> Frame | str:
    try:
        f = decode(payload, max_samples=4096)
    except FrameError as exc:
        assert exc.reason in FRAME_REASONS
        return exc.reason
    assert f.samples.dtype == np.float32 and np.all(np.isfinite(f.samples))
    assert f.fs > 0 and f.seq >= 0 and 0 < f.samples.size <= 4096
    return f


@_SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_or_reason(data)
    _decode_or_reason(b"EVIB" + data)
    _decode_or_reason(b"{" + data)


_frames = st.builds(
    lambda n, seq, fs, seed: Frame(seq, 1_700_000_000 * 10**9, fs,
                                   np.random.default_rng(seed).normal(size=n).astype(np.float32)),
    st.integers(1, 64), st.integers(0, 2**64 - 1), st.floats(1.0, 1e5), st.integers(0, 100),
)


@_SETTINGS
@given(_frames, st.sampled_from(["int16", "float32", "json"]),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 400))
def test_mutated_valid_frames(frame: Frame, form: str, flips: list[tuple[int, int]], cut: int) -> None:
    good = encode_json(frame) if form == "json" else encode(frame, form)  # type: ignore[arg-type]
    assert isinstance(_decode_or_reason(good), Frame)
    buf = bytearray(good)
    for pos, val in flips:
        buf[pos % len(buf)] = val
    _decode_or_reason(bytes(buf))
    _decode_or_reason(bytes(buf[: max(0, len(buf) - cut)]))


@_SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
                    max_leaves=20),
       st.dictionaries(st.sampled_from(["v", "seq", "t0", "fs", "samples"]),
                       st.none() | st.integers() | st.floats() | st.lists(st.floats(), max_size=4)))
def test_json_shaped_garbage(value: object, doc: dict[str, object]) -> None:
    _decode_or_reason(json.dumps(value).encode())
    _decode_or_reason(json.dumps(doc).encode())
