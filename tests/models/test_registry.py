"""The model registry (signing, versions) and its ``edgevib models`` commands; no broker, no torch."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from edgevib.models.registry import Registry, RegistryError, keygen

from edgevib.cli import main
from edgevib.errors import ConfigError
from edgevib.protocol.updates import load_public_key, verify
from tests.edge.tinymodels import tiny_onnx


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "keys")


def test_keygen_writes_a_private_key_only_the_owner_reads_and_never_overwrites(keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600 and b"PRIVATE KEY" in priv.read_bytes()
    assert b"PUBLIC KEY" in pub.read_bytes()
    with pytest.raises(RegistryError, match="exists"):
        keygen(priv.parent)


def test_add_signs_what_the_edge_verifies(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    src = tmp_path / "cnn_tiny.onnx"
    src.write_bytes(tiny_onnx("good", version="3", classes=("normal", "IR007", "OR007")))
    reg = Registry(tmp_path / "reg", private_key=keys[0])
    m = reg.add(src, metrics={"acc": 0.97}, card="# card")
    assert (m.name, m.version, m.window, m.classes, m.metrics) == ("cnn_tiny", "3", 2048,
                                                                   ("normal", "IR007", "OR007"), {"acc": 0.97})
    d = tmp_path / "reg" / "cnn_tiny" / "3"
    assert sorted(p.name for p in d.iterdir()) == ["card.md", "manifest.json", "manifest.sig", "model.onnx"]
    e = reg.get("cnn_tiny", "3")
    assert verify(e.data(), json.loads((d / "manifest.json").read_text()), e.signature, load_public_key(keys[1])) == m


def test_versions_previous_and_same_bytes_twice(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    reg = Registry(tmp_path / "reg", private_key=keys[0])
    src = tmp_path / "m.onnx"
    src.write_bytes(tiny_onnx("good", version="1"))
    v1 = reg.add(src)
    assert reg.add(src) == v1  # idempotent
    src.write_bytes(tiny_onnx("nan", version="1"))  # other bytes, same metadata version
    v2 = reg.add(src)
    assert v2.version == f"1+{v2.sha256[:8]}"
    v3 = reg.add(src, version="9")
    assert [e.manifest.version for e in reg.list()] == ["1", v2.version, "9"]
    assert reg.get("m").manifest == v3 and reg.previous("m", "9").manifest == v2  # type: ignore[union-attr]
    assert reg.previous("m", "1") is None
    with pytest.raises(RegistryError, match="exists"):
        reg.add(src, version="9")
    with pytest.raises(RegistryError):
        reg.add(src, version="../evil")
    with pytest.raises(RegistryError, match="no m v7"):
        reg.get("m", "7")
    with pytest.raises(ConfigError, match="no private key"):
        Registry(tmp_path / "reg").add(src, version="10")


def test_a_file_breaking_the_contract_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(RegistryError, match="not a loadable ONNX model"):
        Registry(tmp_path / "reg", private_key=keys[0]).add(bad)


def test_cli_keygen_add_list_and_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEVIB_REGISTRY_ROOT", str(tmp_path / "reg"))
    assert main(["models", "keygen", "--out", "k"]) == 0
    (tmp_path / "tiny.onnx").write_bytes(tiny_onnx("good"))
    assert main(["models", "add", "tiny.onnx", "--key", "k/signing_key.pem", "--version", "5"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert (doc["name"], doc["version"]) == ("tiny", "5")
    assert main(["models", "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["models", "push", "tiny:6", "--to", "plant/gw"]) == 2  # no such version
    assert main(["models", "push", "tiny", "--to", "plant"]) == 2  # not SITE/GATEWAY
    assert main(["models", "push", "tiny", "--to", "fleet"]) == 2  # fleet needs a store
    assert main(["models", "push", "tiny", "--to", "a/b", "--canary", "150%"]) == 2


def test_models_cli_does_not_import_torch() -> None:
    code = "import sys, edgevib.models.cli, edgevib.models.registry_cli, edgevib.cloud.rollout\n" \
           "print([m for m in ('torch', 'pyflink') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_fleet_means_every_gateway_in_the_store(tmp_path: Path) -> None:
    from edgevib.cloud.store import Store
    from edgevib.models.registry import RegistryConfig
    from edgevib.models.registry_cli import _targets

    url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    store = Store(url)
    for site, gw in (("p1", "gw-a"), ("p2", "gw-b")):
        store.apply("gateway", {"site": site, "gateway": gw, "status": "online"})
    store.close()
    got = _targets(["fleet", "p1/gw-a", "p3/gw-c"], RegistryConfig(store_url=url))
    assert got == [("p1", "gw-a"), ("p2", "gw-b"), ("p3", "gw-c")]  # de-duplicated, in order
