"""Signed model updates on the wire: manifest, Ed25519 signature, chunked messages, verify.

A model travels as a manifest (name, version, sha256 and size of the .onnx bytes, window,
sample rate, classes, ...), an Ed25519 signature over the manifest's canonical JSON, and
the model bytes cut into base64 chunks (each message < 200 KB) on the gateway's ``models``
topic (docs/protocol.md, "Model updates"). Nothing here imports onnx or onnxruntime.

>>> m = Manifest("tiny", "1", "0" * 64, 10, 0, 4, 12000.0, ("normal", "IR007"), {}, "k")
>>> Manifest.from_dict(json.loads(canonical(m.to_dict()))) == m
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevib.protocol.errors import WireError

SCHEMA = "edgevib.model_update/1"
STATUS_SCHEMA = "edgevib.model_status/1"
CHUNK_BYTES = 128 * 1024  # raw bytes per chunk: base64 (4/3) + JSON envelope stays under 200 KB
MAX_CHUNKS = 4096  # bounds the parts dict even for empty chunks
REASONS: tuple[str, ...] = (
    "unsigned", "no_key", "bad_signature", "hash_mismatch", "too_large", "incompatible", "bad_manifest",
    "load_failed", "shadow_failed", "probation_failed", "timeout", "superseded", "no_previous", "requested",
    "store_failed", "internal_error",
)
RESULTS: tuple[str, ...] = ("installed", "rejected", "rolled_back")


class UpdateError(WireError):
    """A model update was refused; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, problem: str, fix: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; use one of {REASONS}")
        self.reason = reason
        super().__init__("protocol.updates", problem, fix)


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The signed form of a manifest: sorted keys, compact separators, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True)
class Manifest:
    """What a signature vouches for: the model's identity, hash, size and input contract."""

    name: str
    version: str
    sha256: str
    size: int
    created_ms: int
    window: int
    sample_rate: float
    classes: tuple[str, ...]
    metrics: Mapping[str, Any] = field(default_factory=dict, hash=False)
    key_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "size": self.size,
                "created_ms": self.created_ms, "window": self.window, "sample_rate": self.sample_rate,
                "classes": list(self.classes), "metrics": dict(self.metrics), "key_id": self.key_id}

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Parse a manifest; anything malformed raises UpdateError ``bad_manifest``."""
        try:
            if not isinstance(d, Mapping):
                raise TypeError("not a JSON object")
            m = cls(str(d["name"]), str(d["version"]), str(d["sha256"]), int(d["size"]), int(d["created_ms"]),
                    int(d["window"]), float(d["sample_rate"]), tuple(str(c) for c in d["classes"]),
                    dict(d.get("metrics") or {}), str(d.get("key_id", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UpdateError("bad_manifest", f"manifest {str(d)[:120]!r} ({exc!r})",
                              "publish manifests written by `edgevib models add`") from exc
        if len(m.sha256) != 64 or m.size < 1 or m.window < 1 or not math.isfinite(m.sample_rate) \
                or m.sample_rate <= 0 or len(m.classes) < 2 or not m.name or not m.version:
            raise UpdateError("bad_manifest", f"manifest of {m.name!r} v{m.version!r} has impossible fields",
                              "publish manifests written by `edgevib models add`")
        return m


# -- keys and signatures (cryptography is imported only when used) -----------------------------
def key_id(public_key: Any) -> str:
    """16 hex digits naming a public key (sha256 of its raw bytes)."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: str | Path) -> Any:
    """An Ed25519 public key from a PEM file, or UpdateError ``no_key`` naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).expanduser().read_bytes())
    except (OSError, ValueError) as exc:
        raise UpdateError("no_key", f"public key {str(path)!r} unreadable ({exc})",
                          "point update.public_key at the .pub.pem written by `edgevib models keygen`") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UpdateError("no_key", f"public key {str(path)!r} is not Ed25519", "use `edgevib models keygen`")
    return key


def sign(manifest: Manifest, private_key: Any) -> str:
    """Base64 Ed25519 signature over :func:`canonical` of the manifest."""
    return base64.b64encode(private_key.sign(canonical(manifest.to_dict()))).decode()


def verify(model_bytes: bytes, manifest: Manifest | Mapping[str, Any] | None, signature: str | None,
           public_key: Any, *, max_bytes: int | None = None) -> Manifest:
    """Check signature, size and hash; raise :class:`UpdateError` saying why, else return the manifest."""
    from cryptography.exceptions import InvalidSignature

    if not signature or manifest is None:
        raise UpdateError("unsigned", "update carries no signature", "sign it: `edgevib models add` then push")
    if public_key is None:
        raise UpdateError("no_key", "no public key configured: updates are refused",
                          "set update.public_key to the registry's public key PEM")
    m = manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)
    try:
        sig = base64.b64decode(signature, validate=True)
        public_key.verify(sig, canonical(m.to_dict()))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        mine = key_id(public_key)
        hint = f" (signed with key {m.key_id}, this gateway trusts {mine})" if m.key_id != mine else ""
        raise UpdateError("bad_signature", f"signature of {m.name} v{m.version} does not verify{hint}",
                          "sign with the registry key whose public half this gateway holds") from exc
    if max_bytes is not None and max(m.size, len(model_bytes)) > max_bytes:
        raise UpdateError("too_large", f"model of {max(m.size, len(model_bytes))} bytes > {max_bytes}",
                          "raise update.max_model_bytes or push a smaller model")
    got = hashlib.sha256(model_bytes).hexdigest()
    if len(model_bytes) != m.size or got != m.sha256:
        raise UpdateError("hash_mismatch", f"model bytes ({len(model_bytes)} B, sha256 {got[:12]}) differ from "
                          f"the signed manifest ({m.size} B, {m.sha256[:12]})", "push the model file that was signed")
    return m


# -- messages -------------------------------------------------------------------------------
def new_update_id(manifest: Manifest) -> str:
    return f"{manifest.name}-{manifest.version}-{uuid.uuid4().hex[:8]}"


def encode_install(update_id: str, manifest: Manifest | None, signature: str | None, data: bytes,
                   chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """The ``install`` messages of one update, one per chunk of ``data``."""
    n = max(1, math.ceil(len(data) / chunk_bytes))
    head = {"schema": SCHEMA, "action": "install", "update_id": update_id,
            "manifest": manifest.to_dict() if manifest else None, "signature": signature, "chunks": n}
    return [json.dumps({**head, "chunk": i, "data": base64.b64encode(data[i * chunk_bytes:(i + 1) * chunk_bytes]
                                                                     ).decode()}).encode() for i in range(n)]


def encode_rollback(update_id: str, reason: str = "requested") -> bytes:
    return json.dumps({"schema": SCHEMA, "action": "rollback", "update_id": update_id, "reason": reason}).encode()


@dataclass(frozen=True)
class Update:
    """A fully received install: still unverified."""

    update_id: str
    manifest: Mapping[str, Any] | None
    signature: str | None
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Rollback:
    update_id: str
    reason: str


@dataclass(frozen=True)
class Rejected:
    """An update the assembler gave up on (too large, timed out); the agent reports it."""

    update_id: str
    manifest: Mapping[str, Any] | None
    reason: str
    detail: str


class Assembler:
    """Collect one update's chunks at a time, bounded in size and time; count garbage.

    A chunk of a new ``update_id`` supersedes an unfinished one (the pusher retried).
    """

    def __init__(self, max_bytes: int, timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes, self.timeout_s, self.clock = max_bytes, timeout_s, clock
        self.garbage: dict[str, int] = {}
        self._id: str | None = None
        self._head: dict[str, Any] = {}
        self._parts: dict[int, bytes] = {}
        self._last = 0.0

    def _junk(self, reason: str) -> None:
        """Count a message that is not part of any usable update (never raised: it is untrusted input)."""
        self.garbage[reason] = self.garbage.get(reason, 0) + 1

    def expire(self) -> Rejected | None:
        """The unfinished update, if no chunk arrived for ``timeout_s``."""
        if self._id is None or self.clock() - self._last < self.timeout_s:
            return None
        uid, head, got = self._id, self._head, len(self._parts)
        self._id, self._parts = None, {}
        return Rejected(uid, head.get("manifest"), "timeout", f"{got} of {head.get('chunks')} chunks in {self.timeout_s:g} s")

    def feed(self, payload: bytes) -> Update | Rollback | Rejected | None:
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
                self._junk("bad_schema")
                return None
            uid = doc["update_id"]
            if not isinstance(uid, str) or not 0 < len(uid) <= 128:
                self._junk("bad_field")
                return None
            if doc.get("action") == "rollback":
                return Rollback(uid, str(doc.get("reason", "requested"))[:200])
            if doc.get("action") != "install":
                self._junk("bad_field")
                return None
            i, n, data = int(doc["chunk"]), int(doc["chunks"]), base64.b64decode(doc["data"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            self._junk("bad_json")
            return None
        head = {k: doc.get(k) for k in ("manifest", "signature", "chunks")}
        if not 0 <= i < n or n > MAX_CHUNKS:
            self._junk("bad_field")
            return None
        if uid != self._id:
            if self._id is not None:
                self._junk("superseded")
            self._id, self._head, self._parts = uid, head, {}
        elif head != self._head:
            self._junk("bad_field")  # a chunk that disagrees with the first one
            return None
        self._last = self.clock()
        self._parts[i] = data
        size = sum(len(p) for p in self._parts.values())
        claimed = head["manifest"].get("size", 0) if isinstance(head["manifest"], dict) else 0
        if size > self.max_bytes or (isinstance(claimed, int) and claimed > self.max_bytes):
            self._id, self._parts = None, {}
            return Rejected(uid, head["manifest"], "too_large", f"update of > {self.max_bytes} bytes")
        if len(self._parts) < n:
            return None
        blob = b"".join(self._parts[k] for k in range(n))
        self._id, self._parts = None, {}
        sig = head["signature"] if isinstance(head["signature"], str) else None
        return Update(uid, head["manifest"] if isinstance(head["manifest"], dict) else None, sig, blob)


def make_status(*, site: str, gateway: str, update_id: str, result: str, reason: str,
                manifest: Mapping[str, Any] | None = None, t_ns: int | None = None, **numbers: Any) -> dict[str, Any]:
    """An ``edgevib.model_status/1`` document (the agent's verdict on one update or rollback)."""
    if result not in RESULTS:
        raise ValueError(f"result {result!r} not in {RESULTS}")
    m = manifest or {}
    return {"schema": STATUS_SCHEMA, "site": site, "gateway": gateway, "t_ns": t_ns or time.time_ns(),
            "update_id": update_id, "name": m.get("name"), "version": m.get("version"), "sha256": m.get("sha256"),
            "result": result, "reason": reason, **numbers}
