"""Agent configuration: layering, validation errors that name the key, --help text."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgevib.edge.config import AgentConfig, describe, load_agent_config

from edgevib.errors import ConfigError


def test_toml_env_and_flags_layer_in_order(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text('site = "plant1"\ngateway = "gw1"\nbatch_size = 8\n[alert]\nk = 2\nn = 4\n'
                 '[sensors.de]\nasset = "pump-3"\nn_balls = 8\nball_diameter = 15.0\npitch_diameter = 65.0\nrpm = 1500\n')
    cfg = load_agent_config(p, env={"EDGEVIB_ALERT__K": "3", "EDGEVIB_BROKER_URL": "mqtt://h:1999"},
                            batch_size=16, gateway=None)
    assert (cfg.site, cfg.gateway, cfg.batch_size, cfg.alert.k, cfg.alert.n) == ("plant1", "gw1", 16, 3, 4)
    assert cfg.broker_url == "mqtt://h:1999"
    de = cfg.sensor("de")
    assert de.asset == "pump-3" and de.rpm == 1500 and de.geometry().n_balls == 8
    assert cfg.sensor("unknown") == cfg.default and cfg.default.geometry().n_balls == 9


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"alert": {"k": 6, "n": 5}}, "alert.k"),
    ({"alert": {"p_on": 0.4, "p_off": 0.5}}, "p_off"),
    ({"batch_size": 0}, "batch_size"),
    ({"site": "a/b"}, "site"),
    ({"broker_url": "http://x"}, "mqtt://"),
    ({"heartbeat_s": -1}, "heartbeat_s"),
    ({"sensors": {"de": {"bearing": "nope"}}}, "bearing='nope'"),
    ({"sensors": {"de": {"n_balls": 8}}}, "all three"),
    ({"tls": {"cert": "/no/such.pem"}}, "tls.key"),
    ({"tls": {"ca": "/no/such.pem"}}, "not found"),
    ({"threads": "many"}, "threads"),
])
def test_bad_values_raise_config_error_naming_the_key(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_agent_config(None, env={}, **overrides)
    assert needle in str(err.value) and "fix:" in str(err.value)


def test_unknown_key_in_toml_is_named(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text("batchsize = 3\n")
    with pytest.raises(ConfigError, match="batchsize"):
        load_agent_config(p, env={})


def test_describe_lists_toml_keys_and_env_names() -> None:
    text = describe()
    for needle in ("alert.k", "EDGEVIB_ALERT__K", "EDGEVIB_BROKER_URL", "outbox.path", "[sensors.<name>]"):
        assert needle in text
    assert AgentConfig().model == ""


def test_cli_bad_config_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    from edgevib.cli import main

    assert main(["agent", "--broker", "http://h:1", "--site", "s", "--gateway", "g"]) == 2
    assert "mqtt://HOST:PORT" in capsys.readouterr().err
    assert main(["agent", "--site", "s", "--gateway", "g", "--batch-size", "0"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_agent_help_shows_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from edgevib.cli import main

    with pytest.raises(SystemExit):
        main(["agent", "--help"])
    out = capsys.readouterr().out
    assert "EDGEVIB_ALERT__K" in out and "outbox.path" in out
