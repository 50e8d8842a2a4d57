"""Vibration frames: a compact little-endian binary form and a JSON form.

A frame is one contiguous block of samples from one sensor (the sensor is named by
the MQTT topic, not the frame). :func:`decode` auto-detects JSON (first non-space
byte ``{``) or binary (magic ``EVIB``) and raises :class:`FrameError` with a reason
from a fixed set. The byte layout is documented in ``docs/protocol.md``.

>>> import numpy as np
>>> f = Frame(seq=7, t0_ns=1_700_000_000_000_000_000, fs=12000.0, samples=np.zeros(4, np.float32))
>>> decode(encode(f, dtype="int16")).seq
7
>>> decode(b'{"v":1,"seq":1,"t0":0,"fs":100,"samples":[0.5,-0.5]}').samples.tolist()
[0.5, -0.5]
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edgevib.protocol.errors import FrameError

MAGIC = b"EVIB"
VERSION = 1
DTYPE_INT16 = 1
DTYPE_FLOAT32 = 2
DTYPE_CODES: dict[str, int] = {"int16": DTYPE_INT16, "float32": DTYPE_FLOAT32}
_NP_DTYPES: dict[int, np.dtype[Any]] = {DTYPE_INT16: np.dtype("<i2"), DTYPE_FLOAT32: np.dtype("<f4")}
# magic, version, dtype, flags, scale (g/count), fs (Hz), seq, t0 (ns), n, crc32
HEADER = struct.Struct("<4sBBHfdQqII")
HEADER_SIZE = HEADER.size  # 44
CRC_OFFSET = HEADER_SIZE - 4
DEFAULT_MAX_SAMPLES = 65536
MAX_FS = 10_000_000.0

FrameDtype = Literal["int16", "float32"]


@dataclass(frozen=True)
class Frame:
    """``samples`` are float32 acceleration in g; ``t0_ns`` is the first sample's time.

    A frame decoded from int16 also keeps its wire form: ``counts`` (int16) and ``scale``
    (g per count), with ``samples == counts.astype(float32) * float32(scale)`` exactly, so a
    consumer may store the 2-byte counts and rebuild the same float32 samples later (the
    agent's history ring does). ``counts`` is None for float32 and JSON frames.
    """

    seq: int
    t0_ns: int
    fs: float
    samples: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int16] | None = field(default=None, repr=False, compare=False)
    scale: float = 1.0

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.fs

    def end_ns(self) -> int:
        """Time of the sample after the last one (where the next frame should start)."""
        return self.t0_ns + round(len(self.samples) * 1e9 / self.fs)


def _check_fields(seq: Any, t0: Any, fs: Any, n: int, max_samples: int) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**64:
        raise FrameError("bad_value", f"seq={seq!r}", "send a sequence number 0 <= seq < 2**64")
    if isinstance(t0, bool) or not isinstance(t0, int) or not -(2**63) <= t0 < 2**63:
        raise FrameError("bad_value", f"t0={t0!r}", "send t0 as integer nanoseconds since the epoch")
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not (0 < fs <= MAX_FS):
        raise FrameError("bad_value", f"fs={fs!r}", f"send a sample rate 0 < fs <= {MAX_FS:g} Hz")
    if n == 0:
        raise FrameError("bad_value", "sample count 0", "send at least one sample")
    if n > max_samples:
        raise FrameError("oversized", f"{n} samples > max {max_samples}", "split the block into smaller frames")


def encode(frame: Frame, dtype: FrameDtype = "float32", scale: float | None = None) -> bytes:
    """Binary frame. For int16, ``scale`` (g per count) defaults to peak/32767."""
    if dtype not in DTYPE_CODES:
        raise FrameError("bad_dtype", f"dtype={dtype!r}", "use 'int16' or 'float32'")
    x = np.asarray(frame.samples, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FrameError("bad_value", "samples contain NaN or inf", "send finite samples")
    _check_fields(int(frame.seq), int(frame.t0_ns), float(frame.fs), len(x), 2**32 - 1)
    code = DTYPE_CODES[dtype]
    if code == DTYPE_INT16:
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        s = float(scale) if scale is not None else (peak / 32767.0 if peak > 0 else 1.0)
        if not (math.isfinite(s) and s > 0):
            raise FrameError("bad_value", f"scale={scale!r}", "use a positive finite g per count")
        body = np.clip(np.round(x / s), -32768, 32767).astype("<i2").tobytes()
    else:
        s = 1.0
        body = x.astype("<f4").tobytes()
    head = HEADER.pack(MAGIC, VERSION, code, 0, s, float(frame.fs), int(frame.seq), int(frame.t0_ns), len(x), 0)
    crc = zlib.crc32(body, zlib.crc32(head[:CRC_OFFSET]))
    return head[:CRC_OFFSET] + struct.pack("<I", crc) + body


def encode_json(frame: Frame) -> bytes:
    """JSON frame (for low-rate or hand-made publishers)."""
    x = np.asarray(frame.samples, dtype=np.float64)
    doc = {"v": VERSION, "seq": int(frame.seq), "t0": int(frame.t0_ns), "fs": float(frame.fs), "samples": x.tolist()}
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise FrameError("bad_value", "samples contain NaN or inf", "send finite samples") from exc


def decode(payload: bytes, max_samples: int = DEFAULT_MAX_SAMPLES) -> Frame:
    """Binary or JSON bytes -> :class:`Frame`; anything wrong raises :class:`FrameError`."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise FrameError("bad_value", f"payload of type {type(payload).__name__}", "pass bytes")
    payload = bytes(payload)
    if payload.lstrip()[:1] == b"{":
        return _decode_json(payload, max_samples)
    return _decode_binary(payload, max_samples)


def _decode_binary(payload: bytes, max_samples: int) -> Frame:
    if len(payload) < HEADER_SIZE:
        if payload[:4] != MAGIC[: len(payload[:4])]:
            raise FrameError("bad_magic", f"starts with {payload[:4]!r}", "send EVIB binary frames or JSON")
        raise FrameError("truncated", f"{len(payload)} bytes < {HEADER_SIZE}-byte header", "send whole frames")
    magic, version, code, _flags, scale, fs, seq, t0, n, crc = HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise FrameError("bad_magic", f"magic {magic!r}", "send EVIB binary frames or JSON")
    if version != VERSION:
        raise FrameError("bad_version", f"version {version}", f"send version {VERSION} frames")
    if code not in _NP_DTYPES:
        raise FrameError("bad_dtype", f"dtype code {code}", "use 1 (int16) or 2 (float32)")
    if n > max_samples:
        raise FrameError("oversized", f"{n} samples > max {max_samples}", "split the block into smaller frames")
    dt = _NP_DTYPES[code]
    want = HEADER_SIZE + n * dt.itemsize
    if len(payload) < want:
        raise FrameError("truncated", f"{len(payload)} bytes < {want} for {n} samples", "send whole frames")
    if len(payload) > want:
        raise FrameError("bad_length", f"{len(payload)} bytes > {want} for {n} samples", "send one frame per message")
    got = zlib.crc32(payload[HEADER_SIZE:], zlib.crc32(payload[:CRC_OFFSET]))
    if got != crc:
        raise FrameError("bad_crc", f"crc32 0x{got:08x} != header 0x{crc:08x}", "resend; check the link")
    _check_fields(seq, t0, fs, n, max_samples)
    raw = np.frombuffer(payload, dtype=dt, count=n, offset=HEADER_SIZE)
    if code == DTYPE_INT16:
        if not (math.isfinite(scale) and scale > 0):
            raise FrameError("bad_value", f"scale={scale!r}", "send a positive finite g per count")
        samples = counts_to_samples(raw, scale)
    else:
        samples = raw.astype(np.float32)
    if not np.all(np.isfinite(samples)):
        raise FrameError("bad_value", "samples contain NaN or inf", "send finite samples")
    return Frame(seq=seq, t0_ns=t0, fs=float(fs), samples=samples,
                 counts=raw if code == DTYPE_INT16 else None, scale=float(scale) if code == DTYPE_INT16 else 1.0)


def counts_to_samples(counts: npt.NDArray[Any], scale: float) -> npt.NDArray[np.float32]:
    """int16 counts -> float32 g, as every int16 frame is decoded: each count to float32 (exact),
    times ``float32(scale)`` rounded once in float32. A consumer that keeps the counts and repeats
    these two steps gets the same samples to the last bit (edge/windowing.py's int16 ring)."""
    out = counts.astype(np.float32)
    return np.multiply(out, np.float32(scale), out=out)


def _reject_constant(name: str) -> Any:
    raise FrameError("bad_value", f"JSON constant {name}", "send finite numbers")


def max_binary_bytes(max_samples: int = DEFAULT_MAX_SAMPLES) -> int:
    """The largest binary frame :func:`decode` accepts: header + ``max_samples`` float32."""
    return HEADER_SIZE + max_samples * _NP_DTYPES[DTYPE_FLOAT32].itemsize


def max_json_bytes(max_samples: int = DEFAULT_MAX_SAMPLES) -> int:
    """The largest JSON frame :func:`decode` accepts: no larger than the largest binary frame.

    JSON costs ~6x the bytes of float32 per sample (~25 characters), so a JSON frame holds fewer samples
    (~10,000 of 65,536 by default); one size limit for every frame lets the broker and the
    transport refuse anything larger before it is read, whatever its format (issue 19).
    """
    return max_binary_bytes(max_samples)


def _decode_json(payload: bytes, max_samples: int) -> Frame:
    if len(payload) > max_json_bytes(max_samples):
        raise FrameError("oversized", f"JSON frame of {len(payload)} bytes", "split the block into smaller frames")
    try:
        doc = json.loads(payload, parse_constant=_reject_constant)
    except FrameError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise FrameError("bad_json", f"not JSON ({str(exc)[:80]})", "send a JSON object or a binary frame") from exc
    if not isinstance(doc, dict):
        raise FrameError("bad_json", f"JSON {type(doc).__name__}, not an object", "send a JSON object")
    missing = [k for k in ("v", "seq", "t0", "fs", "samples") if k not in doc]
    if missing:
        raise FrameError("bad_json", f"missing key {missing[0]!r}", 'send {"v":1,"seq":..,"t0":..,"fs":..,"samples":[..]}')
    if doc["v"] != VERSION or isinstance(doc["v"], bool):
        raise FrameError("bad_version", f"v={doc['v']!r}", f"send version {VERSION} frames")
    values = doc["samples"]
    if not isinstance(values, list):
        raise FrameError("bad_value", "samples is not a list", "send samples as a list of numbers")
    _check_fields(doc["seq"], doc["t0"], doc["fs"], len(values), max_samples)
    if not all(type(v) in (int, float) for v in values):
        raise FrameError("bad_value", "samples hold a non-number", "send samples as a list of numbers")
    try:
        with np.errstate(over="ignore"):
            samples = np.asarray(values, dtype=np.float64).astype(np.float32)
    except OverflowError as exc:  # a JSON integer beyond float64
        raise FrameError("bad_value", "a sample overflows float64", "send samples in g") from exc
    if not np.all(np.isfinite(samples)):
        raise FrameError("bad_value", "samples overflow float32 or are not finite", "send finite samples in g")
    return Frame(seq=doc["seq"], t0_ns=doc["t0"], fs=float(doc["fs"]), samples=samples)
