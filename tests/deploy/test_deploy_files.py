"""The container files and the systemd unit: Docker cannot run here, so check them statically."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from edgevib.tools.deploy import _validate_agent_config
from tests.conftest import REPO, _missing

DEPLOY = REPO / "deploy"


def _yaml() -> object:
    try:
        import yaml
    except ModuleNotFoundError:
        _missing("PyYAML is not installed")
        raise
    return yaml


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile.agent", "Dockerfile.cloud"])
def test_dockerfile_copies_files_that_exist(name: str) -> None:
    ins = _instructions(DEPLOY / name)
    stages = [rest.split()[-1] for word, rest in ins if word == "FROM" and " AS " in rest.upper()]
    copies = [rest for word, rest in ins if word == "COPY"]
    assert copies, f"{name} copies nothing"
    for rest in copies:
        args = shlex.split(rest)
        if any(a.startswith("--from=") for a in args):
            assert any(a == f"--from={s}" for a in args for s in stages), f"{name}: unknown stage in COPY {rest}"
            continue
        for src in [a for a in args if not a.startswith("--")][:-1]:
            assert (REPO / src).exists(), f"{name}: COPY source {src} missing in the build context (repo root)"
    # every package directory the wheel build needs is copied
    copied = {shlex.split(r)[0] for r in copies if not r.startswith("--")}
    for pkg_dir in ("edgevib", "edge", "models", "cloud", "pyproject.toml"):
        assert pkg_dir in copied, f"{name} does not copy {pkg_dir}"
    assert ins[0][0] == "FROM" and ins[-1][0] in ("CMD", "ENTRYPOINT")
    assert any(w == "USER" and r != "root" for w, r in ins), f"{name} runs as root"


def test_agent_image_installs_only_the_edge_extra() -> None:
    runs = " ".join(rest for word, rest in _instructions(DEPLOY / "Dockerfile.agent") if word == "RUN")
    assert "[edge]" in runs
    for heavy in ("torch", "onnx ", "apache-flink", "[dev]", "[train]", "[cloud]"):
        assert heavy not in runs
    cloud = " ".join(rest for word, rest in _instructions(DEPLOY / "Dockerfile.cloud") if word == "RUN")
    assert "openjdk-17-jdk" in cloud and "apache-flink==" in cloud


def test_compose_stack_is_well_formed() -> None:
    yaml = _yaml()
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[attr-defined]
    services = doc["services"]
    assert set(services) == {"mosquitto", "cloud", "agent"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    # 1883 (anonymous, internal) must not be published to the host
    published = [str(p).split(":")[-1] for p in services["mosquitto"]["ports"]]
    assert "1883" not in published and {"8883", "8884"} <= set(published)
    for name in ("cloud", "agent"):
        build = services[name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO and (context / build["dockerfile"]).is_file()
        assert services[name]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert services["cloud"]["environment"]["EDGEVIB_BROKER_URL"] == "mqtt://mosquitto:1883"
    # every bind mount from the repo exists, or is one of the documented operator files
    operator_files = {"./gw.toml", "./certs", "./certs/ca.crt"}
    named = set(doc.get("volumes", {}))
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists() or src in operator_files, f"compose mounts missing {src}"
            else:
                assert src in named, f"volume {src} not declared"
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for listener in ("8883", "8884", "1883"):
        assert f"listener {listener}\n" in conf


def test_broker_limits_fit_the_largest_legitimate_message() -> None:
    """Issue 19: the shipped broker refuses oversized messages, but never a legitimate one."""
    import tomllib

    from edgevib.edge.config import AgentConfig
    from edgevib.edge.limits import PACKET_OVERHEAD, largest_message, max_packet

    opts: dict[str, int] = {}
    for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in ("message_size_limit", "max_packet_size", "max_queued_bytes", "max_queued_messages"):
            assert key not in opts, f"{key} set twice"
            opts[key] = int(value)
    assert set(opts) == {"message_size_limit", "max_packet_size", "max_queued_bytes", "max_queued_messages"}
    example = tomllib.loads((DEPLOY / "gw.example.toml").read_text())
    for samples in {AgentConfig().max_frame_samples, example.get("max_frame_samples", AgentConfig().max_frame_samples)}:
        largest = largest_message(samples)
        # not under the largest message (it would be lost), and not far above it (no limit at all)
        assert largest <= opts["message_size_limit"] <= largest * 1.1, (samples, opts)
        assert max_packet(samples) <= opts["max_packet_size"] <= opts["message_size_limit"] + 2 * PACKET_OVERHEAD
    # a queue of the most messages allowed, at the largest size, must not be unbounded in bytes
    assert 0 < opts["max_queued_bytes"] < opts["max_queued_messages"] * opts["message_size_limit"]
    assert opts["max_queued_bytes"] <= 256 * 2**20


def test_example_gateway_config_is_valid() -> None:
    import tomllib

    from edgevib.edge.config import AgentConfig

    _validate_agent_config(DEPLOY / "gw.example.toml")
    # a live gateway bounds alert latency (issue 15); the library default (0) stays off for replays
    budget = tomllib.loads((DEPLOY / "gw.example.toml").read_text()).get("latency_budget_ms", 0)
    assert budget > AgentConfig().batch_deadline_ms and AgentConfig().latency_budget_ms == 0, budget


def _render_unit(tmp_path: Path, exec_path: Path) -> Path:
    text = (DEPLOY / "edgevib-agent.service.in").read_text()
    for k, v in {"@PREFIX@": "/opt/edgevib", "@CONFDIR@": "/etc/edgevib", "@VENV@": str(exec_path.parent.parent),
                 "@CONFIG@": "gw.toml", "@USER@": "edgevib"}.items():
        text = text.replace(k, v)
    assert "@" not in text.replace("@system-service", "").replace("~@privileged", ""), "unrendered token"
    unit = tmp_path / "edgevib-agent.service"
    unit.write_text(text)
    return unit


def test_unit_is_hardened_and_restarts_on_failure(tmp_path: Path) -> None:
    unit = _render_unit(tmp_path, Path("/opt/edgevib/venv/bin/edgevib")).read_text()
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert keys["ExecStart"] == "/opt/edgevib/venv/bin/edgevib agent --config /etc/edgevib/gw.toml"
    assert keys["User"] == "edgevib" and keys["Restart"] == "on-failure"
    for k, v in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                 "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}.items():
        assert keys[k] == v, k


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        _missing("systemd-analyze not found (systemd)")
    fake = tmp_path / "venv" / "bin" / "edgevib"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    unit = _render_unit(tmp_path, fake)
    r = subprocess.run([str(exe), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify warns (exit 0) on unknown or malformed settings: any output about our unit fails the test
    ours = [line for line in (r.stdout + r.stderr).splitlines() if unit.name in line]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr
