"""install.sh logic with a stand-in Python (fast, offline): paths, modes, checks, refusals.

The real install (a virtualenv, real wheels, a running agent) is test_deploy_install.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from edgevib.tools.deploy import BUNDLE_ROOT, build_bundle
from tests.deploy.conftest import write_config, write_tiny_model

# Answers install.sh's version probe, makes a "venv" holding itself and a stub `edgevib`,
# and records every pip command line.
FAKE_PYTHON = r"""#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
  -c) case "$2" in *print*version_info*) echo "${FAKE_PYV:-3.11}" ;; esac; exit 0 ;;
  -m) if [ "$2" = venv ]; then
        mkdir -p "$3/bin"; cp "$0" "$3/bin/python"
        printf '#!/bin/sh\necho edgevib 0.1.0\n' > "$3/bin/edgevib"; chmod +x "$3/bin/edgevib"
      fi; exit 0 ;;
esac
exit 1
"""


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inst")
    write_tiny_model(d / "tiny.onnx")
    (d / "ca.crt").write_text("CA\n")
    write_config(d / "gw.toml", "mqtts://broker.example:8883", extra='[tls]\nca = "ca.crt"\n')
    res = build_bundle(d / "gw.toml", d / "gw.tar.gz", wheels=False)
    with tarfile.open(res.path) as tar:
        tar.extractall(d / "pristine", filter="data")
    return d / "pristine" / BUNDLE_ROOT


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "fakebin" / "python3"
    fake.parent.mkdir()
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    e = {k: v for k, v in os.environ.items() if k not in ("PREFIX", "CONFDIR", "PYTHON")}
    e.update(PATH=f"{fake.parent}:{e['PATH']}", FAKE_LOG=str(tmp_path / "pip.log"))
    return e


def _copy(bundle_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / BUNDLE_ROOT
    shutil.copytree(bundle_root, dst)
    return dst


def _install(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(root / "install.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_installs_files_and_renders_paths(bundle_root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    root = _copy(bundle_root, tmp_path)
    prefix, confdir = tmp_path / "opt", tmp_path / "etc"
    r = _install(root, env, "--prefix", str(prefix), "--confdir", str(confdir), "--no-systemd")
    assert r.returncode == 0, r.stderr
    assert f"ExecStart={prefix}/venv/bin/edgevib agent --config {confdir}/gw.toml" in r.stdout.splitlines()
    cfg = (confdir / "gw.toml").read_text()
    assert f'model = "{prefix}/models/tiny.onnx"' in cfg and f'ca = "{confdir}/tls/ca.crt"' in cfg
    assert "@" not in cfg
    assert (confdir / "gw.toml").stat().st_mode & 0o077 == 0  # may hold a password
    assert (prefix / "models" / "tiny.onnx").read_bytes() == (root / "models" / "tiny.onnx").read_bytes()
    assert (confdir / "tls" / "ca.crt").read_text() == "CA\n"
    unit = (prefix / "share" / "edgevib-agent.service").read_text()
    assert f"ExecStart={prefix}/venv/bin/edgevib agent --config {confdir}/gw.toml" in unit
    assert "@" not in unit.replace("@system-service", "").replace("~@privileged", "")
    pip = [line for line in Path(env["FAKE_LOG"]).read_text().splitlines() if "pip install" in line]
    assert len(pip) == 1 and "--no-index" not in pip[0]  # lock-only bundle: the gateway's pip index
    assert f"-r {root}/requirements-edge.txt" in pip[0] and pip[0].endswith("edgevib-0.1.0-py3-none-any.whl") and "--no-deps" in pip[0]


def test_offline_bundle_installs_from_its_wheels_only(bundle_root: Path, tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    root = _copy(bundle_root, tmp_path)
    (root / "bundle.env").write_text((root / "bundle.env").read_text().replace("OFFLINE=0", "OFFLINE=1"))
    subprocess.run(["sh", "-c", "find . -type f ! -name SHA256SUMS | sed 's|^./||' | sort | xargs sha256sum"
                    " > SHA256SUMS"], cwd=root, check=True)
    r = _install(root, env, "--prefix", str(tmp_path / "opt"), "--confdir", str(tmp_path / "etc"), "--no-systemd")
    assert r.returncode == 0, r.stderr
    pip = [line for line in Path(env["FAKE_LOG"]).read_text().splitlines() if "pip install" in line]
    assert f"--no-index --find-links {root}/wheels" in pip[0]


def test_offline_bundle_refuses_another_python(bundle_root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    root = _copy(bundle_root, tmp_path)
    (root / "bundle.env").write_text((root / "bundle.env").read_text().replace("OFFLINE=0", "OFFLINE=1"))
    subprocess.run(["sh", "-c", "find . -type f ! -name SHA256SUMS | sed 's|^./||' | sort | xargs sha256sum"
                    " > SHA256SUMS"], cwd=root, check=True)
    r = _install(root, {**env, "FAKE_PYV": "3.12"}, "--prefix", str(tmp_path / "opt"), "--no-systemd")
    assert r.returncode == 2
    assert "wheels are for Python 3.11" in r.stderr and "--python-version 3.12" in r.stderr
    assert not (tmp_path / "opt").exists()


def test_tampered_bundle_is_refused_before_installing(bundle_root: Path, tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    root = _copy(bundle_root, tmp_path)
    with open(root / "models" / "tiny.onnx", "ab") as fh:
        fh.write(b"\0")
    r = _install(root, env, "--prefix", str(tmp_path / "opt"), "--no-systemd")
    assert r.returncode == 2 and "checksums do not match" in r.stderr
    assert not (tmp_path / "opt").exists()


@pytest.mark.parametrize("prefix", ["relative/dir", "/opt/edge vib", "/opt/a;rm -rf x", "/opt/../etc", "/"])
def test_unsafe_prefix_is_refused(bundle_root: Path, tmp_path: Path, env: dict[str, str], prefix: str) -> None:
    r = _install(bundle_root, env, "--prefix", prefix, "--no-systemd", "--check")
    assert r.returncode == 2 and "fix:" in r.stderr, r.stderr


def test_check_mode_changes_nothing(bundle_root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    r = _install(bundle_root, env, "--prefix", str(tmp_path / "opt"), "--check")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and f"ExecStart={tmp_path}/opt/venv/bin/edgevib" in r.stdout
    assert not (tmp_path / "opt").exists()


def test_systemd_mode_creates_user_installs_and_starts_unit(bundle_root: Path, tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    """As root: systemctl/useradd/chgrp are stand-ins that record their arguments."""
    root = _copy(bundle_root, tmp_path)
    prefix, confdir, unit_dir = tmp_path / "opt", tmp_path / "etc", tmp_path / "systemd"
    unit_dir.mkdir()
    if os.geteuid() != 0:
        r = _install(root, env, "--prefix", str(prefix), "--confdir", str(confdir))
        assert r.returncode == 2 and "needs root" in r.stderr
        return
    fakebin = Path(env["PATH"].split(":")[0])
    for tool in ("systemctl", "useradd", "chgrp"):
        (fakebin / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "$FAKE_LOG"\n')
        (fakebin / tool).chmod(0o755)
    r = _install(root, {**env, "SYSTEMD_DIR": str(unit_dir)}, "--prefix", str(prefix), "--confdir", str(confdir))
    assert r.returncode == 0, r.stderr
    calls = [c for c in Path(env["FAKE_LOG"]).read_text().splitlines() if not c.startswith(("-", "-m"))]
    unit = "edgevib-agent.service"
    assert ["systemctl daemon-reload", f"systemctl enable {unit}", f"systemctl restart {unit}"] == \
        [c for c in calls if c.startswith("systemctl")]
    assert f"chgrp edgevib {confdir}/gw.toml" in calls
    if subprocess.run(["id", "edgevib"], capture_output=True).returncode != 0:
        assert any(c.startswith("useradd --system") and c.endswith(" edgevib") for c in calls), calls
    assert (unit_dir / unit).read_text() == (prefix / "share" / unit).read_text()
    assert (confdir / "gw.toml").stat().st_mode & 0o777 == 0o640
    assert "started" in r.stdout
