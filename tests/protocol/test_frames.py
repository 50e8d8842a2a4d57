"""Binary and JSON vibration frames: round trips and every drop reason."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from edgevib.protocol.errors import FRAME_REASONS, FrameError
from edgevib.protocol.frames import (
    CRC_OFFSET,
    HEADER,
    HEADER_SIZE,
    Frame,
    decode,
    encode,
    encode_json,
)


def _frame(n: int = 256, seed: int = 0) -> Frame:
    x = np.random.default_rng(seed).normal(0, 0.3, n).astype(np.float32)
    return Frame(seq=42, t0_ns=1_700_000_000_123_456_789, fs=12000.0, samples=x)


def _reason(payload: bytes, **kw: int) -> str:
    with pytest.raises(FrameError) as ei:
        decode(payload, **kw)
    assert ei.value.reason in FRAME_REASONS
    assert "protocol.frames" in str(ei.value) and "fix:" in str(ei.value)
    return ei.value.reason


def _recrc(buf: bytearray) -> bytes:
    crc = zlib.crc32(bytes(buf[HEADER_SIZE:]), zlib.crc32(bytes(buf[:CRC_OFFSET])))
    buf[CRC_OFFSET:HEADER_SIZE] = struct.pack("<I", crc)
    return bytes(buf)


def test_header_is_44_bytes_little_endian() -> None:
    f = _frame(4)
    b = encode(f, "float32")
    assert HEADER_SIZE == 44 and len(b) == 44 + 16
    assert b[:4] == b"EVIB" and b[4] == 1 and b[5] == 2
    assert struct.unpack_from("<d", b, 12)[0] == 12000.0
    assert struct.unpack_from("<Q", b, 20)[0] == 42
    assert struct.unpack_from("<q", b, 28)[0] == f.t0_ns
    assert struct.unpack_from("<I", b, 36)[0] == 4


def test_float32_round_trip_exact() -> None:
    f = _frame()
    g = decode(encode(f, "float32"))
    assert (g.seq, g.t0_ns, g.fs) == (f.seq, f.t0_ns, f.fs)
    np.testing.assert_array_equal(g.samples, f.samples)
    assert g.samples.dtype == np.float32


def test_int16_round_trip_within_half_a_count() -> None:
    f = _frame()
    b = encode(f, "int16")
    assert len(b) == HEADER_SIZE + 2 * 256
    g = decode(b)
    scale = np.max(np.abs(f.samples)) / 32767
    assert np.max(np.abs(g.samples - f.samples)) <= 0.51 * scale


def test_int16_explicit_scale_clips() -> None:
    f = Frame(1, 0, 100.0, np.array([0.0, 1.0, -100.0], np.float32))
    g = decode(encode(f, "int16", scale=0.001))
    assert g.samples.tolist() == pytest.approx([0.0, 1.0, -32.768])


def test_json_round_trip_and_whitespace() -> None:
    f = _frame(16)
    g = decode(b"  \n" + encode_json(f))
    np.testing.assert_allclose(g.samples, f.samples, rtol=1e-6)
    assert g.seq == 42 and g.t0_ns == f.t0_ns


def test_end_ns_is_next_frame_start() -> None:
    f = Frame(0, 1_000, 1000.0, np.zeros(10, np.float32))
    assert f.end_ns() == 1_000 + 10_000_000


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0", "bad_length"),
        (lambda b: b"XVIB" + b[4:], "bad_magic"),
        (lambda b: b"", "truncated"),
        (lambda b: b[:-4] + bytes([b[-4] ^ 1]) + b[-3:], "bad_crc"),
    ],
)
def test_binary_corruption_reasons(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    assert _reason(mutate(encode(_frame()))) == reason


def test_version_dtype_fs_nan_with_valid_crc() -> None:
    base = bytearray(encode(_frame(8)))
    b = bytearray(base)
    b[4] = 9
    assert _reason(_recrc(b)) == "bad_version"
    b = bytearray(base)
    b[5] = 7
    assert _reason(_recrc(b)) == "bad_dtype"
    b = bytearray(base)
    b[12:20] = struct.pack("<d", 0.0)
    assert _reason(_recrc(b)) == "bad_value"
    b = bytearray(base)
    b[HEADER_SIZE:HEADER_SIZE + 4] = struct.pack("<f", float("nan"))
    assert _reason(_recrc(b)) == "bad_value"
    b = bytearray(encode(_frame(8), "int16"))
    b[8:12] = struct.pack("<f", float("inf"))
    assert _reason(_recrc(b)) == "bad_value"


def test_oversized_is_checked_before_reading_samples() -> None:
    head = HEADER.pack(b"EVIB", 1, 2, 0, 1.0, 12000.0, 0, 0, 10_000_000, 0)
    assert _reason(head) == "oversized"
    f = _frame(100)
    assert _reason(encode(f), max_samples=99) == "oversized"
    assert decode(encode(f), max_samples=100).samples.size == 100


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"{\"v\":1}", "bad_json"),
        (b"{\"v\":2,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[1]}", "bad_version"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":0,\"samples\":[1]}", "bad_value"),
        (b"{\"v\":1,\"seq\":-1,\"t0\":0,\"fs\":10,\"samples\":[1]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0.5,\"fs\":10,\"samples\":[1]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[NaN]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[Infinity]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[1e39]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[true]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[\"1\"]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[1e999999]}", "bad_value"),
        (b"{\"v\":1,\"seq\":0,\"t0\":0,\"fs\":10,\"samples\":[" + b"9" * 500 + b"]}", "bad_value"),
        (b"{\xff\xfe}", "bad_json"),
    ],
)
def test_json_reasons(doc: bytes, reason: str) -> None:
    assert _reason(doc) == reason


def test_json_oversized() -> None:
    doc = json.dumps({"v": 1, "seq": 0, "t0": 0, "fs": 10, "samples": [0.0] * 200}).encode()
    assert _reason(doc, max_samples=100) == "oversized"


def test_encode_refuses_nan() -> None:
    f = Frame(0, 0, 10.0, np.array([np.nan], np.float32))
    with pytest.raises(FrameError) as ei:
        encode(f)
    assert ei.value.reason == "bad_value"
