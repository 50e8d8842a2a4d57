"""Must show: bundle -> install as a gateway would -> the unit's ExecStart -> heartbeat at the broker,
from a slimmed venv (no pip, no ONNX Runtime C/C++ API library), which install.sh can upgrade again.

The bundle is ``--no-wheels``: install.sh creates a fresh virtualenv and installs the pinned
lock through this machine's pip configuration (its index and cache), as a gateway with a
package mirror would. Timings are printed (``pytest -s``) and written to ``timings.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from edgevib.edge.mqtt import MqttLink

from edgevib.broker import MosquittoProcess
from edgevib.protocol import Topics, parse_heartbeat
from edgevib.tools.deploy import BUNDLE_ROOT, build_bundle
from tests.deploy.conftest import write_config, write_tiny_model

pytestmark = pytest.mark.integration


def _clean_env() -> dict[str, str]:
    """The environment of a fresh gateway shell: no virtualenv or PYTHONPATH from this test run."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PREFIX", "CONFDIR", "PYTHON")
           and not k.startswith("EDGEVIB_")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def _wait(link: MqttLink, topic: str, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = link.poll(0.2)
        if msg is not None and msg.topic == topic:
            return msg.payload
    raise AssertionError(f"nothing on {topic} within {timeout:.0f} s")


def test_bundle_installs_and_agent_heartbeats(broker: MosquittoProcess, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    topics = Topics("plant1", "gw-deploy")
    src = tmp_path / "dev"
    src.mkdir()
    write_tiny_model(src / "tiny.onnx")
    write_config(src / "gw.toml", broker.url, gateway=topics.gateway)

    t = time.monotonic()
    res = build_bundle(src / "gw.toml", tmp_path / "gw.tar.gz", wheels=False)
    timings["bundle_s"] = time.monotonic() - t
    timings["bundle_mb"] = res.size / 1e6

    gateway = tmp_path / "gateway"  # what the operator unpacks on the gateway
    with tarfile.open(res.path) as tar:
        tar.extractall(gateway, filter="data")
    prefix, confdir = tmp_path / "opt" / "edgevib", tmp_path / "etc" / "edgevib"
    env = _clean_env()
    t = time.monotonic()
    r = subprocess.run(["sh", str(gateway / BUNDLE_ROOT / "install.sh"), "--prefix", str(prefix),
                        "--confdir", str(confdir), "--no-systemd"],
                       env=env, capture_output=True, text=True, timeout=420)
    timings["install_s"] = time.monotonic() - t
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

    unit = (prefix / "share" / "edgevib-agent.service").read_text()
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
    assert f"ExecStart={exec_start}" in r.stdout
    argv = shlex.split(exec_start)
    assert argv == [str(prefix / "venv" / "bin" / "edgevib"), "agent", "--config", str(confdir / "gw.toml")]

    # the install is the gateway's own: not this checkout (editable) and no training stack
    py = str(prefix / "venv" / "bin" / "python")
    probe = subprocess.run([py, "-c", "import edgevib, importlib.util as u; print(edgevib.__file__);"
                            "print(u.find_spec('torch') is None and u.find_spec('onnx') is None);"
                            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__));"
                            "print(u.find_spec('pip') is None and u.find_spec('setuptools') is None)"],
                           env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    where, edge_only, ort_dir, no_installers = probe.stdout.split()
    assert where.startswith(str(prefix)) and edge_only == "True", probe.stdout + probe.stderr
    # slimmed (install.sh step 5): no installers, no ONNX Runtime C/C++ API library; the agent
    # below still loads and runs its model
    assert no_installers == "True", probe.stdout
    assert not list((Path(ort_dir) / "capi").glob("libonnxruntime.so*"))
    assert list((Path(ort_dir) / "capi").glob("onnxruntime_pybind11_state*"))

    state = tmp_path / "var-lib-edgevib"  # the unit's WorkingDirectory
    state.mkdir()
    sub = MqttLink(broker.url, "deploy-test-sub", connect=False)
    sub.subscribe(topics.heartbeat)
    sub.subscribe(topics.status)
    sub.start()
    assert sub.wait_connected(10)
    t = time.monotonic()
    agent = subprocess.Popen(argv, env=env, cwd=state, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait(sub, topics.status, 60) == b"online"
        hb = parse_heartbeat(_wait(sub, topics.heartbeat, 60))
        timings["first_heartbeat_s"] = time.monotonic() - t
        assert hb["site"] == "plant1" and hb["gateway"] == "gw-deploy" and hb["agent_version"] == "0.1.0"
        assert hb["model"]["name"] == "tiny"
        agent.send_signal(signal.SIGTERM)  # what systemctl stop does
        out, _ = agent.communicate(timeout=30)
        assert agent.returncode == 0, out[-3000:]
        assert _wait(sub, topics.status, 10) == b"offline"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        sub.close()
    assert (state / "edgevib-outbox.sqlite").exists()  # state stays in the working directory

    # Running install.sh again (an upgrade) works on the slimmed venv: ensurepip puts pip back;
    # --no-slim keeps it.
    t = time.monotonic()
    r = subprocess.run(["sh", str(gateway / BUNDLE_ROOT / "install.sh"), "--prefix", str(prefix),
                        "--confdir", str(confdir), "--no-systemd", "--no-slim"],
                       env=env, capture_output=True, text=True, timeout=420)
    timings["reinstall_s"] = time.monotonic() - t
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    again = subprocess.run([py, "-m", "pip", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and str(prefix) in again.stdout, again.stdout + again.stderr

    (tmp_path / "timings.json").write_text(json.dumps(timings))
    print("deploy timings:", json.dumps({k: round(v, 2) for k, v in timings.items()}))
