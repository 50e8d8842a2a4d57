"""``edgevib deploy ssh`` with stand-in ``ssh``/``scp``/``sudo`` on PATH: no remote host is contacted.

The stand-ins record their argv; ``scp`` copies to the "remote" path locally and ``ssh`` runs
the remote command with ``sh -c`` here, so the command's quoting is exercised for real.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tarfile
from pathlib import Path

import pytest

from edgevib.errors import ConfigError
from edgevib.tools import deploy
from edgevib.tools.deploy import BUNDLE_ROOT, DeployError, build_bundle, plan_ssh
from tests.deploy.conftest import write_config, write_tiny_model
from tests.deploy.test_install_script import FAKE_PYTHON

STUB = """#!{py}
import json, os, subprocess, sys, shutil
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_SSH_LOG"], "a") as fh:
    fh.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
if name == "scp":
    src, dst = args[-2], args[-1]
    shutil.copy(src, dst.split(":", 1)[1])
elif name == "ssh":
    sys.exit(subprocess.run(["sh", "-c", args[-1]]).returncode)
elif name == "sudo":
    assert args[0] == "-n", args
    sys.exit(subprocess.run(args[1:]).returncode)
"""


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ssh-bundle")
    write_tiny_model(d / "tiny.onnx")
    write_config(d / "gw.toml", "mqtt://127.0.0.1:1")
    return build_bundle(d / "gw.toml", d / "gw.tar.gz", wheels=False).path


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ssh", "scp", "sudo"):
        (bin_dir / name).write_text(STUB.format(py=sys.executable))
        (bin_dir / name).chmod(0o755)
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "pip.log"))
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edgevib")
    deploy.register(parser.add_subparsers())
    args = parser.parse_args(["deploy", *argv])
    return int(args.func(args))


def test_ssh_copies_installs_and_cleans_up(tarball: Path, fakes: Path, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key")
    remote, prefix = tmp_path / "remote", tmp_path / "opt"
    remote.mkdir()
    rc = _cli("ssh", "admin@gw-7.plant1.example", "--bundle", str(tarball), "--port", "2222",
              "--identity", str(key), "--remote-dir", str(remote), "--prefix", str(prefix),
              "--confdir", str(tmp_path / "etc"), "--no-systemd")
    assert rc == 0
    calls = _calls(fakes)
    assert [c[0] for c in calls] == ["scp", "ssh", "sudo"]
    scp, ssh, sudo = calls
    assert scp[1:] == ["-q", "-o", "BatchMode=yes", "-i", str(key), "-P", "2222", "--", str(tarball),
                       f"admin@gw-7.plant1.example:{scp[-1].split(':', 1)[1]}"]
    assert scp[-1].split(":", 1)[1].startswith(f"{remote}/edgevib-deploy-")
    assert ssh[1:7] == ["-o", "BatchMode=yes", "-i", str(key), "-p", "2222"]
    assert ssh[7:9] == ["--", "admin@gw-7.plant1.example"] and len(ssh) == 10
    assert sudo[1:3] == ["-n", "sh"] and sudo[-1] == "--no-systemd"  # not root@: sudo -n
    # install.sh really ran (stand-in Python), and the remote scratch files are gone
    assert (prefix / "share" / "edgevib-agent.service").is_file()
    assert list(remote.iterdir()) == []


def test_root_target_runs_without_sudo_and_failure_propagates(tarball: Path, fakes: Path,
                                                             tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    with pytest.raises(DeployError, match="running install.sh failed"):
        # a relative --prefix is refused by install.sh on the "remote" side (exit 2)
        plan = plan_ssh("root@10.0.0.7", tarball, remote_dir=str(remote), install_args=["--prefix", "rel/dir"])
        deploy.ship(plan)
    calls = _calls(fakes)
    assert [c[0] for c in calls] == ["scp", "ssh"]  # no sudo for root
    assert list(remote.iterdir()) == []


def test_remote_command_quotes_every_argument(tarball: Path) -> None:
    evil = "/opt/x'; touch /tmp/pwned; '"
    plan = plan_ssh("root@host", tarball, install_args=["--prefix", evil], tag="t1")
    remote = plan.ssh[-1]
    assert shlex.quote(evil) in remote
    assert "sh /tmp/edgevib-deploy-t1/edgevib-bundle/install.sh --prefix " + shlex.quote(evil) in remote
    # the CLI itself refuses such a prefix before building anything
    with pytest.raises(ConfigError, match="--prefix"):
        _cli("ssh", "root@host", "--bundle", str(tarball), "--prefix", evil, "--dry-run")


@pytest.mark.parametrize("target", ["-oProxyCommand=touch /tmp/x", "user@host;reboot", "user@host name",
                                    "us er@host", "@host", "user@", "user@-host", ""])
def test_bad_targets_are_refused(tarball: Path, target: str) -> None:
    with pytest.raises(ConfigError, match="USER@HOST"):
        plan_ssh(target, tarball)


def test_bad_port_identity_bundle_remote_dir(tarball: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        plan_ssh("gw", tarball, port=70000)
    with pytest.raises(ConfigError, match="identity"):
        plan_ssh("gw", tarball, identity=tmp_path / "missing-key")
    with pytest.raises(ConfigError, match="bundle"):
        plan_ssh("gw", tmp_path / "missing.tar.gz")
    with pytest.raises(ConfigError, match="remote-dir"):
        plan_ssh("gw", tarball, remote_dir="tmp")


def test_dry_run_prints_and_runs_nothing(tarball: Path, fakes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("ssh", "gw-7", "--bundle", str(tarball), "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert shlex.split(out[0])[0] == "scp" and shlex.split(out[1])[0] == "ssh"
    assert not fakes.exists()


def test_tarball_unpacks_where_the_remote_command_expects(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        assert f"{BUNDLE_ROOT}/install.sh" in tar.getnames()
