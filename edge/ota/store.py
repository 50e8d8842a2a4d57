"""Model slots on the gateway's disk: verified files plus an atomically switched ``current.json``.

``current.json`` holds ``active`` and ``previous``, each ``{"path", "name", "version",
"sha256"}``; it is replaced with ``os.replace`` after an fsync, so a power cut leaves
either the old or the new pointer, never half of one. Only the files of the two slots
are kept.

>>> import tempfile
>>> s = ModelStore(tempfile.mkdtemp())
>>> e = s.install(b"onnx bytes", name="tiny", version="1", sha256="ab" * 32)
>>> s.active()["version"], Path(s.active()["path"]).name
('1', 'tiny-1-abababab.onnx')
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from edgevib.edge.errors import EdgeError

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")
Slot = dict[str, Any]


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class ModelStore:
    """The ``model_dir`` of one agent: ``<name>-<version>-<sha8>.onnx`` files and ``current.json``."""

    def __init__(self, model_dir: str | Path) -> None:
        self.dir = Path(model_dir).expanduser()  # created by the first install, not before
        self.pointer = self.dir / "current.json"

    def _read(self) -> dict[str, Slot | None]:
        try:
            doc = json.loads(self.pointer.read_text())
            return {"active": doc.get("active"), "previous": doc.get("previous")}
        except FileNotFoundError:
            return {"active": None, "previous": None}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("model store %s: unreadable current.json (%s); using the configured model", self.dir, exc)
            return {"active": None, "previous": None}

    def _write(self, active: Slot | None, previous: Slot | None) -> None:
        _write_atomic(self.pointer, json.dumps({"active": active, "previous": previous}, indent=1).encode())
        keep = {Path(s["path"]).name for s in (active, previous) if s}
        for f in self.dir.glob("*.onnx"):  # bounded disk: only the two slots stay
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def active(self) -> Slot | None:
        return self._read()["active"]

    def previous(self) -> Slot | None:
        return self._read()["previous"]

    def install(self, data: bytes, *, name: str, version: str, sha256: str, current: Slot | None = None) -> Slot:
        """Write the file, then switch: the new model becomes ``active``, the old active ``previous``.

        ``current`` describes the running model when the store has none yet (the configured
        file), so the first rollback has somewhere to go.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeError("edge.ota.store", f"cannot create model_dir {str(self.dir)!r} ({exc})",
                            "set update.model_dir to a writable directory") from exc
        fname = f"{_SAFE.sub('_', name)}-{_SAFE.sub('_', version)}-{sha256[:8]}.onnx"
        _write_atomic(self.dir / fname, data)
        # absolute: the agent may be restarted from another working directory
        slot: Slot = {"path": str((self.dir / fname).resolve()), "name": name, "version": version, "sha256": sha256}
        prev = self.active() or current
        self._write(slot, prev if prev and prev.get("sha256") != sha256 else self.previous())
        log.info("model store %s: active %s v%s (%s)", self.dir, name, version, sha256[:12])
        return slot

    def rollback(self) -> Slot:
        """Make ``previous`` active again and forget the failed model; return the new active."""
        cur = self._read()
        if not cur["previous"]:
            raise EdgeError("edge.ota.store", f"no previous model in {str(self.dir)!r}",
                            "push a known-good model instead")
        self._write(cur["previous"], None)
        return cur["previous"]

    def forget(self) -> None:
        """No pushed model is active any more: the next start runs the configured model."""
        if self.pointer.exists():
            self._write(None, None)
