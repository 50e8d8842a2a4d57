"""``edgevib deploy bundle``: what the tarball holds, and the errors it gives."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from edgevib.models.registry import keygen

from edgevib.config import read_toml
from edgevib.errors import ConfigError
from edgevib.tools import deploy
from edgevib.tools.deploy import BUNDLE_ROOT, DeployError, build_bundle, dumps_toml, edge_lock
from tests.conftest import REPO
from tests.deploy.conftest import write_config, write_tiny_model


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One --no-wheels bundle with TLS files and a public key; returns (tarball, unpacked root)."""
    d = tmp_path_factory.mktemp("bundle")
    write_tiny_model(d / "tiny.onnx")
    (d / "pki").mkdir()
    for name in ("ca.crt", "gw.crt", "gw.key"):
        (d / "pki" / name).write_text(f"-----BEGIN TEST-----\n{name}\n-----END TEST-----\n")
    _, pub = keygen(d / "keys")
    shutil.copy(pub, d / "pki" / "signing.pub")
    write_config(d / "gw.toml", "mqtts://broker.example:8883",
                 extra='username = "gw-a"\npassword = "s3cret"\n'
                       '[tls]\nca = "pki/ca.crt"\ncert = "pki/gw.crt"\nkey = "pki/gw.key"\n')
    res = build_bundle(d / "gw.toml", d / "out" / "gw.tar.gz", wheels=False, public_key=d / "pki" / "signing.pub")
    assert res.path.is_file() and res.size == res.path.stat().st_size and not res.offline
    with tarfile.open(res.path) as tar:
        names = tar.getnames()
        assert all(n == BUNDLE_ROOT or n.startswith(BUNDLE_ROOT + "/") for n in names), names
        assert not any(".." in n.split("/") or n.startswith("/") for n in names)
        tar.extractall(d / "x", filter="data")
    return res.path, d / "x" / BUNDLE_ROOT


def test_bundle_holds_everything_install_needs(bundle: tuple[Path, Path]) -> None:
    _, root = bundle
    for rel in ("install.sh", "edgevib-agent.service.in", "bundle.env", "manifest.json", "SHA256SUMS",
                "requirements-edge.txt", "config/gw.toml", "models/tiny.onnx", "config/tls/ca.crt",
                "config/tls/gw.crt", "config/tls/gw.key", "keys/signing.pub"):
        assert (root / rel).is_file(), rel
    assert (root / "install.sh").stat().st_mode & 0o111
    assert (root / "install.sh").read_bytes() == (REPO / "deploy" / "install.sh").read_bytes()
    env = dict(line.split("=", 1) for line in (root / "bundle.env").read_text().splitlines())
    assert env["CONFIG_NAME"] == "gw.toml" and env["MODEL_NAME"] == "tiny.onnx" and env["OFFLINE"] == "0"
    assert env["PUBKEY_NAME"] == "signing.pub"
    # the agent on the gateway verifies model updates with the bundled key
    cfg = tomllib.loads((root / "config" / "gw.toml").read_text())
    assert cfg["update"]["public_key"] == "@CONFDIR@/keys/signing.pub"
    assert (root / "wheels" / env["EDGEVIB_WHEEL"]).is_file()


def test_checksums_cover_every_file(bundle: tuple[Path, Path]) -> None:
    _, root = bundle
    sums = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(sums) == files
    for name, digest in sums.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name


def test_config_rewritten_for_the_gateway(bundle: tuple[Path, Path]) -> None:
    _, root = bundle
    cfg = tomllib.loads((root / "config" / "gw.toml").read_text())
    assert cfg["model"] == "@PREFIX@/models/tiny.onnx"
    assert cfg["tls"] == {"ca": "@CONFDIR@/tls/ca.crt", "cert": "@CONFDIR@/tls/gw.crt", "key": "@CONFDIR@/tls/gw.key"}
    # everything else is the operator's config, unchanged
    assert cfg["username"] == "gw-a" and cfg["password"] == "s3cret" and cfg["alert"] == {"k": 2}
    assert cfg["sensors"]["de"] == {"asset": "pump-3", "rpm": 1797}


def test_wheel_is_the_whole_package_and_lock_is_edge_only(bundle: tuple[Path, Path]) -> None:
    _, root = bundle
    manifest = json.loads((root / "manifest.json").read_text())
    wheel = root / "wheels" / manifest["wheels"][0]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for mod in ("edgevib/cli.py", "edgevib/edge/agent.py", "edgevib/edge/mqtt.py", "edgevib/models/contract.py"):
        assert mod in names, mod
    assert not any("__pycache__" in n for n in names)
    assert "Provides-Extra: edge" in meta
    pins = dict(line.split("==") for line in (root / "requirements-edge.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert {"numpy", "paho-mqtt", "onnxruntime", "psutil"} <= set(pins)
    # scipy is a train/cloud dependency since the agent's hot path went numpy-only (issue 15)
    assert not {"scipy", "torch", "onnx", "apache-flink", "matplotlib", "pytest"} & set(pins)
    assert manifest["requirements"] == [f"{k}=={v}" for k, v in sorted(pins.items())]


def test_edge_lock_pins_installed_versions() -> None:
    from importlib.metadata import version

    lock = dict(edge_lock(REPO))
    for name in ("numpy", "paho-mqtt", "onnxruntime"):
        assert lock[name] == version(name)


def test_dumps_toml_round_trips_nested_tables() -> None:
    doc = {"a": 1, "b": "x \"q\" \\ \u00e9\n", "c": [1.5, -2.0], "d": True,
           "t": {"k": 3, "sub": {"deep": "y"}}, "sensors": {"de": {"rpm": 1797.0}, "fe": {"asset": "p"}}}
    assert tomllib.loads(dumps_toml(doc)) == doc


@pytest.mark.parametrize("edit,err,words", [
    ('model = "missing.onnx"', DeployError, "model='missing.onnx'"),
    ('[alert]\nk = 0', ConfigError, "k=0"),
    ('colour = "blue"', ConfigError, "colour"),
    ('[tls]\nca = "nope.crt"', DeployError, "tls.ca"),
])
def test_bad_configs_are_refused_with_the_key_named(tmp_path: Path, edit: str, err: type[Exception],
                                                    words: str) -> None:
    write_tiny_model(tmp_path / "tiny.onnx")
    text = write_config(tmp_path / "gw.toml", "mqtt://127.0.0.1:1").read_text()
    if edit.startswith("model"):
        text = text.replace('model = "tiny.onnx"', edit)
    elif edit.startswith("[alert]"):
        text = text.replace("[alert]\nk = 2", edit)
    else:
        text = edit + "\n" + text if not edit.startswith("[") else text + "\n" + edit + "\n"
    (tmp_path / "gw.toml").write_text(text)
    with pytest.raises(err) as ei:
        build_bundle(tmp_path / "gw.toml", tmp_path / "gw.tar.gz", wheels=False)
    assert words in str(ei.value) and "fix:" in str(ei.value)
    assert not (tmp_path / "gw.tar.gz").exists()


def test_no_model_and_no_zoo_model_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gw.toml").write_text('site = "s"\ngateway = "g"\n')
    monkeypatch.setattr(deploy, "DEFAULT_ZOO_MODEL", Path("models/zoo/no-such-model.onnx"))
    with pytest.raises(DeployError, match="--model"):
        deploy.plan_bundle(tmp_path / "gw.toml", REPO)


def test_unsafe_file_names_are_refused(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "my model.onnx")
    write_config(tmp_path / "gw.toml", "mqtt://127.0.0.1:1")
    with pytest.raises(DeployError, match="rename"):
        deploy.plan_bundle(tmp_path / "gw.toml", REPO, model=tmp_path / "my model.onnx")


def test_download_wheels_targets_the_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], *_a: object, **_k: object) -> str:
        seen.append(list(cmd))
        return ""

    monkeypatch.setattr(deploy, "_run", fake_run)
    deploy.download_wheels(tmp_path / "lock.txt", tmp_path, platforms=["manylinux_2_28_aarch64"],
                           python_version="3.11")
    cmd = seen[0]
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("--platform") + 1] == "manylinux_2_28_aarch64"
    assert cmd[cmd.index("--python-version") + 1] == "3.11"
    assert cmd[cmd.index("-r") + 1] == str(tmp_path / "lock.txt")


def test_cli_bundle(tmp_path: Path, gw_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="edgevib")
    deploy.register(parser.add_subparsers())
    args = parser.parse_args(["deploy", "bundle", "--config", str(gw_dir / "gw.toml"),
                              "--out", str(tmp_path / "b.tar.gz"), "--no-wheels"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "b.tar.gz" in out and "lock only" in out
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        cfg = tar.extractfile(f"{BUNDLE_ROOT}/config/gw.toml")
        assert cfg is not None and b'model = "@PREFIX@/models/tiny.onnx"' in cfg.read()
    assert read_toml(gw_dir / "gw.toml")["model"] == "tiny.onnx"  # the operator's file is untouched


def test_absolute_outbox_outside_the_state_directory_warns(gw_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = gw_dir / "gw.toml"
    cfg.write_text(cfg.read_text() + '\n[outbox]\npath = "/data/outbox.sqlite"\n')
    with caplog.at_level("WARNING", logger="edgevib.tools.deploy"):
        deploy.plan_bundle(cfg, REPO)
    assert "ProtectSystem=strict" in caplog.text and "/data/outbox.sqlite" in caplog.text
    caplog.clear()
    cfg.write_text(cfg.read_text().replace("/data/outbox.sqlite", "/var/lib/edgevib/o.sqlite"))
    with caplog.at_level("WARNING", logger="edgevib.tools.deploy"):
        deploy.plan_bundle(cfg, REPO)
    assert caplog.text == ""


def test_a_key_that_is_not_ed25519_is_refused_at_bundle_time(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "tiny.onnx")
    write_config(tmp_path / "gw.toml", "mqtt://broker.example:1883")
    (tmp_path / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    with pytest.raises(DeployError, match="unreadable"):
        build_bundle(tmp_path / "gw.toml", tmp_path / "gw.tar.gz", wheels=False, public_key=tmp_path / "bad.pub")
