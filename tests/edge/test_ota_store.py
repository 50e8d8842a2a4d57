"""Model slots on disk: atomic switch of current.json, two slots kept, rollback, start-up load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from edgevib.edge.config import load_agent_config
from edgevib.edge.errors import EdgeError
from edgevib.edge.ota.store import ModelStore
from edgevib.edge.ota.updater import load_active

from tests.edge.tinymodels import tiny_onnx


def _install(s: ModelStore, data: bytes, version: str) -> dict[str, str]:
    return s.install(data, name="tiny", version=version, sha256=hashlib.sha256(data).hexdigest())


def test_install_switches_active_and_keeps_only_two_slots(tmp_path: Path) -> None:
    s = ModelStore(tmp_path / "md")
    assert s.active() is None and not (tmp_path / "md").exists()  # nothing is created before an install
    a, b, c = (_install(s, bytes([i]) * 10, str(i)) for i in (1, 2, 3))
    assert s.active() == c and s.previous() == b
    assert sorted(p.name for p in (tmp_path / "md").iterdir()) == sorted(
        ["current.json", Path(b["path"]).name, Path(c["path"]).name])  # a's file is gone, no temp files
    assert Path(c["path"]).name == f"tiny-3-{hashlib.sha256(bytes([3]) * 10).hexdigest()[:8]}.onnx"
    assert Path(c["path"]).read_bytes() == bytes([3]) * 10
    assert not Path(a["path"]).exists()


def test_rollback_restores_previous_and_forgets_the_failed_model(tmp_path: Path) -> None:
    s = ModelStore(tmp_path)
    first = _install(s, b"one", "1")
    second = _install(s, b"two", "2")
    assert s.rollback() == first
    assert s.active() == first and s.previous() is None and not Path(second["path"]).exists()
    with pytest.raises(EdgeError, match="no previous model"):
        s.rollback()


def test_first_install_remembers_the_configured_model_as_previous(tmp_path: Path) -> None:
    configured = tmp_path / "factory.onnx"
    configured.write_bytes(b"factory")
    s = ModelStore(tmp_path / "md")
    cur = {"path": str(configured), "name": "factory", "version": "1", "sha256": "f" * 64}
    s.install(b"new", name="tiny", version="2", sha256="a" * 64, current=cur)
    assert s.previous() == cur
    assert s.rollback() == cur and configured.exists()  # a file outside model_dir is never deleted
    s.forget()
    assert json.loads(s.pointer.read_text()) == {"active": None, "previous": None}


def test_unreadable_pointer_means_no_pushed_model(tmp_path: Path) -> None:
    (tmp_path / "current.json").write_text("{half a json")
    assert ModelStore(tmp_path).active() is None


def test_agent_start_loads_the_active_model_unless_it_changed_on_disk(tmp_path: Path) -> None:
    data = tiny_onnx("good", version="7")
    cfg = load_agent_config(None, env={}, update={"model_dir": str(tmp_path / "md")})
    assert load_active(cfg) is None
    slot = ModelStore(tmp_path / "md").install(data, name="tiny", version="2024.1",
                                               sha256=hashlib.sha256(data).hexdigest())
    m = load_active(cfg)
    assert m is not None and (m.name, m.version, m.sha256) == ("tiny", "2024.1", slot["sha256"])
    Path(slot["path"]).write_bytes(tiny_onnx("good", version="8"))  # changed behind the agent's back
    assert load_active(cfg) is None


def test_update_modules_never_import_torch_onnx_or_pyflink() -> None:
    import subprocess
    import sys

    code = ("import sys\nimport edgevib.edge.agent, edgevib.protocol.updates, edgevib.edge.ota.updater, edgevib.edge.ota.store\n"
            "print([m for m in ('torch', 'onnx', 'pyflink') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
