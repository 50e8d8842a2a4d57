"""Evidence records: one model input window plus its provenance, as one binary message.

Layout (little-endian, documented in ``docs/protocol.md``, "Evidence record")::

    magic "EVEV" | version u8 | dtype u8 | flags u16 | header_len u32 | n u32
    | JSON header (header_len bytes, UTF-8) | n float32 samples | crc32 u32

The CRC covers every byte before it. The window is the model's input (already at the
model's sample rate), stored as float32: int16 would quantise exactly the low-confidence
windows whose fine detail decides a retrain, for a saving of only 4 KiB per 2048-sample
window. :func:`decode` raises :class:`FrameError` (reasons from ``FRAME_REASONS``).

The header's optional ``bearing`` ({n_balls, ball_diameter, pitch_diameter,
contact_angle_deg}: the sensor's bearing) lets the cloud compute order features of the
window (:mod:`edgevib.models.orders`) from it and ``rpm``; records without it still parse.

>>> import numpy as np
>>> r = EvidenceRecord.build(site="p", gateway="g", sensor="de", t_ns=5, rpm=1797.0, sample_rate=12000.0,
...                          reason="healthy_sample", alert_id=None, probs={"normal": 0.9, "IR007": 0.1},
...                          model={"name": "cnn", "version": "1", "sha256": "ab"}, window=np.zeros(8, np.float32))
>>> d = decode(encode(r)); d.pred_cls, d.window.shape, d.id == r.id
('normal', (8,), True)
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgevib.models.bearing import BearingGeometry
from edgevib.models.classes import fault_type
from edgevib.protocol.errors import FrameError, ProtocolError
from edgevib.protocol.topics import check_name

MAGIC = b"EVEV"
VERSION = 1
DTYPE_FLOAT32 = 2
PREFIX = struct.Struct("<4sBBHII")  # magic, version, dtype, flags, header_len, n
MAX_HEADER = 16 * 1024
MAX_SAMPLES = 32768  # 128 KiB of float32: a record stays under the protocol's 256 KiB
REASONS: tuple[str, ...] = ("alert", "low_confidence", "healthy_sample")
BEARING_KEYS: tuple[str, ...] = ("n_balls", "ball_diameter", "pitch_diameter", "contact_angle_deg")
_C = "protocol.evidence"


def _bad(problem: str, fix: str, reason: str = "bad_value") -> FrameError:
    return FrameError(reason, problem, fix, component=_C)


def evidence_id(site: str, gateway: str, sensor: str, t_ns: int) -> str:
    """Deterministic id of one window: a re-sent window (other reason, replay) keeps its id."""
    return hashlib.sha256(f"{site}/{gateway}/{sensor}/{t_ns}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class EvidenceRecord:
    """One window the model saw (float32 at ``sample_rate``) and what it predicted."""

    id: str
    site: str
    gateway: str
    sensor: str
    t_ns: int  # signal time at the window's end
    rpm: float | None
    sample_rate: float
    reason: str
    alert_id: str | None
    pred_cls: str
    probability: float
    probs: dict[str, float]
    model: dict[str, str]
    window: npt.NDArray[np.float32] = field(repr=False)
    bearing: dict[str, float] | None = None  # BEARING_KEYS of the sensor's bearing (optional)

    @classmethod
    def build(cls, *, site: str, gateway: str, sensor: str, t_ns: int, rpm: float | None, sample_rate: float,
              reason: str, alert_id: str | None, probs: Mapping[str, float], model: Mapping[str, str],
              window: npt.ArrayLike, bearing: BearingGeometry | Mapping[str, float] | None = None) -> EvidenceRecord:
        """A validated record; ``pred_cls``/``probability`` are the arg-max of ``probs``."""
        p = {str(k): round(float(v), 6) for k, v in probs.items()}
        top = max(p, key=lambda k: p[k]) if p else ""
        rec = cls(evidence_id(site, gateway, sensor, t_ns), site, gateway, sensor, int(t_ns), rpm,
                  float(sample_rate), reason, alert_id, top, p.get(top, 0.0), p, dict(model),
                  np.ascontiguousarray(window, dtype=np.float32), _bearing_dict(bearing))
        _validate(rec.header(), rec.window)
        return rec

    def geometry(self) -> BearingGeometry | None:
        """The sensor's bearing, if the record carries it."""
        return None if self.bearing is None else geometry_of(self.bearing)

    def header(self) -> dict[str, Any]:
        return {"id": self.id, "site": self.site, "gateway": self.gateway, "sensor": self.sensor,
                "t_ns": self.t_ns, "rpm": self.rpm, "sample_rate": self.sample_rate, "reason": self.reason,
                "alert_id": self.alert_id, "pred_cls": self.pred_cls, "probability": self.probability,
                "probs": self.probs, "model": self.model,
                **({"bearing": self.bearing} if self.bearing is not None else {})}


def _bearing_dict(b: BearingGeometry | Mapping[str, float] | None) -> dict[str, float] | None:
    if b is None:
        return None
    if isinstance(b, BearingGeometry):
        return {"n_balls": b.n_balls, "ball_diameter": float(b.ball_diameter),
                "pitch_diameter": float(b.pitch_diameter), "contact_angle_deg": float(b.contact_angle_deg)}
    return dict(b)  # validated as a header field


def geometry_of(b: Mapping[str, float]) -> BearingGeometry:
    """:class:`BearingGeometry` of a header's ``bearing`` (or a dataset row with those keys)."""
    return BearingGeometry(int(b["n_balls"]), float(b["ball_diameter"]), float(b["pitch_diameter"]),
                           float(b["contact_angle_deg"]))


def _num(h: Mapping[str, Any], k: str, lo: float, hi: float, integer: bool = False) -> None:
    v = h.get(k)
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or not (lo <= v <= hi) \
            or not math.isfinite(v):
        raise _bad(f"header {k}={str(v)[:40]!r}", f"send a finite {'integer' if integer else 'number'} in [{lo}, {hi}]")


def _validate(h: Any, window: npt.NDArray[np.float32]) -> None:
    if not isinstance(h, dict):
        raise _bad(f"header is a {type(h).__name__}", "send a JSON object header", "bad_json")
    try:
        for k in ("site", "gateway", "sensor"):
            check_name(h.get(k), k)
    except ProtocolError as exc:
        raise _bad(exc.problem, exc.fix) from exc
    _num(h, "t_ns", -(2**63), 2**63 - 1, integer=True)
    if not isinstance(h.get("id"), str) or h["id"] != evidence_id(h["site"], h["gateway"], h["sensor"], h["t_ns"]):
        raise _bad(f"header id={str(h.get('id'))[:40]!r}", "use evidence_id(site, gateway, sensor, t_ns)")
    if h.get("rpm") is not None:
        _num(h, "rpm", 1e-9, 1e6)
    b = h.get("bearing")
    if b is not None:
        fix = f"send {{{', '.join(BEARING_KEYS)}}} with 3 <= n_balls, 0 < ball < pitch diameter, 0 <= angle < 90"
        if not isinstance(b, dict) or sorted(b) != sorted(BEARING_KEYS):
            raise _bad(f"header bearing={str(b)[:60]}", fix)
        try:
            _num(b, "n_balls", 3, 1000, integer=True)
            for k in ("ball_diameter", "pitch_diameter", "contact_angle_deg"):
                _num(b, k, 0.0, 1e6)
        except FrameError as exc:
            raise _bad(f"header bearing: {exc.problem}", fix) from exc
        if not (0 < b["ball_diameter"] < b["pitch_diameter"] and b["contact_angle_deg"] < 90):
            raise _bad(f"header bearing={str(b)[:60]}", fix)
    _num(h, "sample_rate", 1e-9, 1e7)
    _num(h, "probability", 0.0, 1.0)
    if h.get("reason") not in REASONS:
        raise _bad(f"header reason={str(h.get('reason'))[:40]!r}", f"use one of {', '.join(REASONS)}")
    aid = h.get("alert_id")
    if (aid is None) == (h["reason"] == "alert") or (aid is not None and not (isinstance(aid, str) and 0 < len(aid) <= 64)):
        raise _bad(f"alert_id={str(aid)[:40]!r} with reason {h['reason']!r}",
                   "give the alert's id (<= 64 chars) exactly when reason is 'alert'")
    probs, model = h.get("probs"), h.get("model")
    pred = h.get("pred_cls")
    if not isinstance(probs, dict) or not 2 <= len(probs) <= 256 or not isinstance(pred, str) or pred not in probs:
        raise _bad("header probs", "send {class: probability} for >= 2 classes, pred_cls among them")
    for k in probs:
        _num(probs, k, 0.0, 1.0)
    try:
        fault_type(h["pred_cls"])
    except Exception as exc:  # noqa: BLE001 - DataError; the name is what matters
        raise _bad(f"pred_cls={h['pred_cls']!r}", "use a class name such as IR007 or normal") from exc
    if not isinstance(model, dict) or not all(isinstance(model.get(k), str) and len(model[k]) <= 256
                                              for k in ("name", "version", "sha256")):
        raise _bad(f"header model={str(model)[:60]}", "send {name, version, sha256} strings")
    if window.ndim != 1 or not 1 <= window.size <= MAX_SAMPLES:
        raise _bad(f"window of shape {window.shape}", f"send 1..{MAX_SAMPLES} samples", "oversized"
                   if window.size > MAX_SAMPLES else "bad_value")
    if not np.all(np.isfinite(window)):
        raise _bad("window holds NaN or inf", "send finite samples")


def encode(rec: EvidenceRecord) -> bytes:
    """Binary evidence record (validates first)."""
    _validate(rec.header(), rec.window)
    head = json.dumps(rec.header(), separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    if len(head) > MAX_HEADER:
        raise _bad(f"header of {len(head)} bytes", f"keep it under {MAX_HEADER} bytes", "oversized")
    body = PREFIX.pack(MAGIC, VERSION, DTYPE_FLOAT32, 0, len(head), rec.window.size) + head \
        + rec.window.astype("<f4").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def decode(payload: bytes) -> EvidenceRecord:
    """Bytes -> :class:`EvidenceRecord`; anything wrong raises :class:`FrameError`."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise _bad(f"payload of type {type(payload).__name__}", "pass bytes")
    b = bytes(payload)
    if len(b) < PREFIX.size + 4:
        if b[:4] != MAGIC[: len(b[:4])]:
            raise _bad(f"starts with {b[:4]!r}", "send EVEV evidence records", "bad_magic")
        raise _bad(f"{len(b)} bytes", "send whole records", "truncated")
    magic, version, dtype, _flags, hlen, n = PREFIX.unpack_from(b)
    if magic != MAGIC:
        raise _bad(f"magic {magic!r}", "send EVEV evidence records", "bad_magic")
    if version != VERSION:
        raise _bad(f"version {version}", f"send version {VERSION} records", "bad_version")
    if dtype != DTYPE_FLOAT32:
        raise _bad(f"dtype code {dtype}", "use 2 (float32)", "bad_dtype")
    if hlen > MAX_HEADER or n > MAX_SAMPLES:
        raise _bad(f"header {hlen} bytes, {n} samples", f"<= {MAX_HEADER} bytes, <= {MAX_SAMPLES} samples", "oversized")
    want = PREFIX.size + hlen + 4 * n + 4
    if len(b) != want:
        raise _bad(f"{len(b)} bytes != {want} for header {hlen} + {n} samples", "send one whole record per message",
                   "truncated" if len(b) < want else "bad_length")
    crc = struct.unpack_from("<I", b, want - 4)[0]
    if zlib.crc32(b[: want - 4]) != crc:
        raise _bad(f"crc32 0x{zlib.crc32(b[: want - 4]):08x} != 0x{crc:08x}", "resend; check the link", "bad_crc")
    try:
        h = json.loads(b[PREFIX.size: PREFIX.size + hlen], parse_constant=lambda c: math.nan)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"header is not JSON ({str(exc)[:60]})", "send a UTF-8 JSON header", "bad_json") from exc
    window = np.frombuffer(b, dtype="<f4", count=n, offset=PREFIX.size + hlen).astype(np.float32)
    _validate(h, window)
    return EvidenceRecord(h["id"], h["site"], h["gateway"], h["sensor"], h["t_ns"],
                          None if h.get("rpm") is None else float(h["rpm"]), float(h["sample_rate"]), h["reason"],
                          h.get("alert_id"), h["pred_cls"], float(h["probability"]),
                          {str(k): float(v) for k, v in h["probs"].items()}, dict(h["model"]), window,
                          None if h.get("bearing") is None else
                          {k: (int if k == "n_balls" else float)(h["bearing"][k]) for k in BEARING_KEYS})
