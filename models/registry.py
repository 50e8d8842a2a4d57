"""The model registry: signed ONNX models under ``<root>/<name>/<version>/``.

Each version directory holds ``model.onnx``, ``manifest.json`` (edgevib/protocol/updates.py
:class:`Manifest`) and ``manifest.sig`` (base64 Ed25519 over the canonical manifest);
``card.md`` when a card was given. Reading needs onnxruntime only (no torch).

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> priv, pub = keygen(d)
>>> oct(priv.stat().st_mode & 0o777), pub.name
('0o600', 'signing_key.pub.pem')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevib.models.contract import read_meta
from edgevib.models.errors import ContractError, ModelsError

from edgevib.errors import ConfigError
from edgevib.protocol.updates import Manifest, key_id, sign

log = logging.getLogger(__name__)
_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
PRIVATE, PUBLIC = "signing_key.pem", "signing_key.pub.pem"


class RegistryError(ModelsError):
    """A registry entry is missing, or a key or name is unusable."""


@dataclass(frozen=True)
class RegistryConfig:
    """``edgevib models`` registry settings: TOML keys or ``EDGEVIB_REGISTRY_<KEY>`` variables."""

    root: str = "model-registry"
    key: str = ""  # private signing key (PEM); needed by `add` only
    broker_url: str = "mqtt://127.0.0.1:1883"
    store_url: str = ""  # sqlite:///PATH: rollout results, and the gateways of `--to fleet`
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError("models.registry", f"timeout_s={self.timeout_s}", "use a positive number of seconds")


def check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value) or value in (".", ".."):
        raise RegistryError("models.registry", f"{what} {value!r}", "use 1-64 characters of A-Z a-z 0-9 _ . + -")
    return value


def keygen(out_dir: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: private PEM (mode 0600) and public PEM; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(out_dir).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    priv, pub = d / PRIVATE, d / PUBLIC
    if priv.exists():
        raise RegistryError("models.registry", f"{priv} exists", "keep the old key, or move it away first")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def load_private_key(path: str | Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).expanduser().read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError("models.registry", f"private key {str(path)!r} unreadable ({exc})",
                          "pass --key PATH of the signing_key.pem from `edgevib models keygen`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("models.registry", f"key {str(path)!r} is not Ed25519", "use `edgevib models keygen`")
    return key


@dataclass(frozen=True)
class Entry:
    """One registered version: its manifest, signature and files."""

    manifest: Manifest
    signature: str
    dir: Path

    @property
    def model_path(self) -> Path:
        return self.dir / "model.onnx"

    def data(self) -> bytes:
        return self.model_path.read_bytes()


class Registry:
    """Versions of named models, each signed at :meth:`add` with the registry's private key."""

    def __init__(self, root: str | Path, *, private_key: str | Path | Any | None = None) -> None:
        self.root = Path(root).expanduser()
        self._key = load_private_key(private_key) if isinstance(private_key, (str, Path)) else private_key

    def add(self, onnx_path: str | Path, *, version: str | None = None, metrics: Mapping[str, Any] | None = None,
            card: str | Path | None = None, name: str | None = None) -> Manifest:
        """Check the ONNX contract, sign and store; ``name`` defaults to the file stem, ``version`` to the
        model's metadata version (``+<sha8>`` appended when that version exists with other bytes)."""
        if self._key is None:
            raise ConfigError("models.registry", "no private key", "pass --key (or EDGEVIB_REGISTRY_KEY)")
        src = Path(onnx_path)
        try:
            meta = read_meta(src)
        except ContractError as exc:
            raise RegistryError("models.registry", exc.problem, exc.fix) from exc
        data = src.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        name = check_name(name or src.stem, "name")
        if version is None:
            version = check_name(meta.version, "version")
            old = self._entry(name, version)
            if old is not None and old.manifest.sha256 == sha:
                return old.manifest  # the same bytes again: nothing to do
            if old is not None:
                version = f"{version}+{sha[:8]}"
        version = check_name(version, "version")
        d = self.root / name / version
        if d.exists():
            raise RegistryError("models.registry", f"{name} v{version} exists", "pick another --version")
        m = Manifest(name, version, sha, len(data), int(time.time() * 1000), meta.window, meta.sample_rate,
                     meta.classes, {**dict(meta.metrics), **dict(metrics or {})}, key_id(self._key.public_key()))
        tmp = self.root / name / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "model.onnx").write_bytes(data)
        (tmp / "manifest.json").write_text(json.dumps(m.to_dict(), indent=1, sort_keys=True))
        (tmp / "manifest.sig").write_text(sign(m, self._key) + "\n")
        if card is not None:
            text = Path(card).read_text() if Path(str(card)).is_file() else str(card)
            (tmp / "card.md").write_text(text)
        os.replace(tmp, d)  # a version appears whole or not at all
        log.info("registry %s: added %s v%s (%s)", self.root, name, version, sha[:12])
        return m

    def _entry(self, name: str, version: str) -> Entry | None:
        d = self.root / name / version
        try:
            m = Manifest.from_dict(json.loads((d / "manifest.json").read_text()))
            return Entry(m, (d / "manifest.sig").read_text().strip(), d)
        except (OSError, ValueError):
            return None

    def get(self, name: str, version: str | None = None) -> Entry:
        """One version, or the newest (by ``created_ms``) when ``version`` is None."""
        if version is None:
            versions = [e for e in self.list() if e.manifest.name == name]
            if not versions:
                raise RegistryError("models.registry", f"no model {name!r} in {self.root}", "add it: edgevib models add")
            return versions[-1]
        e = self._entry(check_name(name, "name"), check_name(version, "version"))
        if e is None:
            raise RegistryError("models.registry", f"no {name} v{version} in {self.root}",
                                "see `edgevib models list` for what is there")
        return e

    def list(self) -> list[Entry]:
        """Every version, by name then age."""
        out = [e for d in sorted(self.root.glob("*/*")) if not d.name.startswith(".")
               and (e := self._entry(d.parent.name, d.name)) is not None]
        return sorted(out, key=lambda e: (e.manifest.name, e.manifest.created_ms, e.manifest.version))

    def previous(self, name: str, version: str) -> Entry | None:
        """The version of ``name`` added just before ``version`` (None for the first)."""
        versions = [e for e in self.list() if e.manifest.name == name]
        idx = [e.manifest.version for e in versions].index(self.get(name, version).manifest.version)
        return versions[idx - 1] if idx > 0 else None
