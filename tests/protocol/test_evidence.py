"""Evidence records: round trip, exact layout, refusals by reason, and a hypothesis fuzz."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevib.protocol.errors import FRAME_REASONS, FrameError
from edgevib.protocol.evidence import MAGIC, PREFIX, EvidenceRecord, decode, encode, evidence_id

_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
MODEL = {"name": "cnn_small", "version": "3", "sha256": "ab" * 32}


def _rec(n: int = 2048, seed: int = 0, reason: str = "alert", alert_id: str | None = "a1") -> EvidenceRecord:
    x = np.random.default_rng(seed).normal(0, 0.2, n).astype(np.float32)
    return EvidenceRecord.build(site="plant", gateway="gw-7", sensor="de", t_ns=1_700_000_000_123_456_789,
                                rpm=1797.0, sample_rate=12000.0, reason=reason, alert_id=alert_id,
                                probs={"normal": 0.02, "IR007": 0.93, "B007": 0.05}, model=MODEL, window=x)


def test_round_trip_is_bit_exact_and_the_layout_is_as_documented() -> None:
    r = _rec()
    b = encode(r)
    d = decode(b)
    np.testing.assert_array_equal(d.window, r.window)  # float32: the model's input, bit for bit
    assert d.window.dtype == np.float32
    assert (d.pred_cls, d.probability, d.alert_id, d.reason, d.model) == ("IR007", 0.93, "a1", "alert", MODEL)
    assert d.id == r.id == evidence_id("plant", "gw-7", "de", 1_700_000_000_123_456_789)
    magic, version, dtype, flags, hlen, n = PREFIX.unpack_from(b)
    assert (magic, version, dtype, flags, n, PREFIX.size) == (MAGIC, 1, 2, 0, 2048, 16)
    assert json.loads(b[16:16 + hlen])["sensor"] == "de"
    assert len(b) == 16 + hlen + 4 * 2048 + 4
    assert struct.unpack("<I", b[-4:])[0] == zlib.crc32(b[:-4])
    assert len(b) < 8192 + 600, "a 2048-sample window costs ~8.5 KiB on the wire"


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b: b[:10], "truncated"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\0", "bad_length"),
    (lambda b: b"XXXX" + b[4:], "bad_magic"),
    (lambda b: b[:4] + b"\x02" + b[5:], "bad_version"),
    (lambda b: b[:5] + b"\x01" + b[6:], "bad_dtype"),
    (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "bad_crc"),
    (lambda b: b[:8] + struct.pack("<I", 10**6) + b[12:], "oversized"),
])
def test_garbage_is_refused_with_a_reason(mutate: object, reason: str) -> None:
    with pytest.raises(FrameError) as ei:
        decode(mutate(encode(_rec())))  # type: ignore[operator]
    assert ei.value.reason == reason and ei.value.component == "protocol.evidence"


def _reseal(head: dict[str, object], x: np.ndarray) -> bytes:
    h = json.dumps(head).encode()
    body = PREFIX.pack(MAGIC, 1, 2, 0, len(h), len(x)) + h + x.astype("<f4").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(("key", "value"), [
    ("reason", "whatever"), ("alert_id", None), ("site", "a/b"), ("id", "forged"), ("pred_cls", "XX9"),
    ("probability", 1.5), ("model", {"name": 1}), ("probs", {"IR007": 0.9}), ("t_ns", "soon"),
])
def test_a_well_framed_record_with_a_bad_header_field_is_bad_value(key: str, value: object) -> None:
    r = _rec()
    head = {**r.header(), key: value}
    with pytest.raises(FrameError) as ei:
        decode(_reseal(head, r.window))
    assert ei.value.reason == "bad_value", ei.value
    assert decode(_reseal(r.header(), r.window)).id == r.id  # the resealer itself is fine
    x = r.window.copy()
    x[3] = np.nan
    with pytest.raises(FrameError, match="NaN"):
        decode(_reseal(r.header(), x))


def test_alert_id_exactly_for_alert_evidence() -> None:
    assert _rec(reason="low_confidence", alert_id=None).alert_id is None
    with pytest.raises(FrameError):
        _rec(reason="healthy_sample", alert_id="a1")
    with pytest.raises(FrameError):
        _rec(reason="alert", alert_id=None)


def _decode_or_reason(payload: bytes) -> EvidenceRecord | str:
    try:
        r = decode(payload)
    except FrameError as exc:
        assert exc.reason in FRAME_REASONS
        return exc.reason
    assert r.window.dtype == np.float32 and np.all(np.isfinite(r.window)) and r.window.ndim == 1
    return r


@_SETTINGS
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _decode_or_reason(data)
    _decode_or_reason(MAGIC + data)
    _decode_or_reason(MAGIC + b"\x01\x02\x00\x00" + data)


@_SETTINGS
@given(st.integers(1, 64), st.integers(0, 100), st.sampled_from(["alert", "low_confidence", "healthy_sample"]),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 400))
def test_fuzz_mutated_valid_records(n: int, seed: int, reason: str, flips: list[tuple[int, int]], cut: int) -> None:
    good = encode(_rec(n, seed, reason, "a1" if reason == "alert" else None))
    assert isinstance(_decode_or_reason(good), EvidenceRecord)
    buf = bytearray(good)
    for pos, val in flips:
        buf[pos % len(buf)] = val
    _decode_or_reason(bytes(buf))
    _decode_or_reason(bytes(buf[: max(0, len(buf) - cut)]))


@_SETTINGS
@given(st.dictionaries(st.sampled_from(["id", "site", "gateway", "sensor", "t_ns", "rpm", "sample_rate", "reason",
                                        "alert_id", "pred_cls", "probability", "probs", "model"]),
                       st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
                       | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=4), st.floats(), max_size=3)),
       st.integers(0, 8))
def test_fuzz_resealed_garbage_headers(over: dict[str, object], n: int) -> None:
    """A valid CRC around any header: validation, not the CRC, must catch it."""
    r = _rec(max(n, 1))
    try:
        payload = _reseal({**r.header(), **over}, r.window[:n])
    except ValueError:  # NaN in json.dumps is allowed by default, so this is rare
        return
    _decode_or_reason(payload)


def test_bearing_is_optional_and_round_trips() -> None:
    from edgevib.models.bearing import CWRU_DE_6205

    old = _rec()
    assert "bearing" not in old.header() and decode(encode(old)).bearing is None  # records without it still parse
    assert decode(encode(old)).geometry() is None
    x = old.window
    r = EvidenceRecord.build(site="plant", gateway="gw-7", sensor="de", t_ns=5, rpm=1797.0, sample_rate=12000.0,
                             reason="low_confidence", alert_id=None, probs={"normal": 0.6, "OR": 0.4}, model=MODEL,
                             window=x, bearing=CWRU_DE_6205)
    d = decode(encode(r))
    assert d.bearing == {"n_balls": 9, "ball_diameter": CWRU_DE_6205.ball_diameter,
                         "pitch_diameter": CWRU_DE_6205.pitch_diameter, "contact_angle_deg": 0.0}
    g = d.geometry()
    assert g is not None and g.orders() == CWRU_DE_6205.orders()


@pytest.mark.parametrize("bearing", [
    {"n_balls": 9, "ball_diameter": 8.0, "pitch_diameter": 39.0},  # a key missing
    {"n_balls": 2, "ball_diameter": 8.0, "pitch_diameter": 39.0, "contact_angle_deg": 0.0},
    {"n_balls": 9.5, "ball_diameter": 8.0, "pitch_diameter": 39.0, "contact_angle_deg": 0.0},
    {"n_balls": 9, "ball_diameter": 40.0, "pitch_diameter": 39.0, "contact_angle_deg": 0.0},
    {"n_balls": 9, "ball_diameter": 8.0, "pitch_diameter": 39.0, "contact_angle_deg": 90.0},
    {"n_balls": 9, "ball_diameter": 8.0, "pitch_diameter": 39.0, "contact_angle_deg": 0.0, "extra": 1},
    "6205",
])
def test_a_bad_bearing_is_bad_value(bearing: object) -> None:
    r = _rec()
    with pytest.raises(FrameError) as ei:
        decode(_reseal({**r.header(), "bearing": bearing}, r.window))
    assert ei.value.reason == "bad_value" and "bearing" in str(ei.value)
