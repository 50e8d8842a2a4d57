from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgevib.config import describe, load
from edgevib.errors import ConfigError


@dataclass(frozen=True)
class Alert:
    k: int = 3
    p_on: float = 0.8

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError("alert.k", f"k={self.k}", "use k >= 1")


@dataclass(frozen=True)
class Cfg:
    broker_url: str = "mqtt://127.0.0.1:1883"
    tls: bool = False
    sensors: tuple[str, ...] = ()
    outbox: Path | None = None
    alert: Alert = field(default_factory=Alert)
    assets: dict[str, str] = field(default_factory=dict)


def test_defaults_then_toml_then_env_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('broker_url = "mqtt://a:1"\n[alert]\nk = 4\np_on = 0.5\n[assets]\ns1 = "pump"\n')
    cfg = load(Cfg, f, env={"EDGEVIB_ALERT__K": "6", "EDGEVIB_TLS": "yes", "OTHER": "x"})
    assert cfg.broker_url == "mqtt://a:1"
    assert cfg.alert.k == 6 and cfg.alert.p_on == 0.5
    assert cfg.tls is True
    assert cfg.assets == {"s1": "pump"}
    cfg2 = load(Cfg, f, env={}, overrides={"broker_url": "mqtt://b:2", "tls": None})
    assert cfg2.broker_url == "mqtt://b:2" and cfg2.tls is False


def test_env_tuple_and_path() -> None:
    cfg = load(Cfg, None, env={"EDGEVIB_SENSORS": "a, b,c", "EDGEVIB_OUTBOX": "/tmp/x.db"})
    assert cfg.sensors == ("a", "b", "c")
    assert cfg.outbox == Path("/tmp/x.db")


def test_unknown_key_names_the_key_and_the_choices(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[alert]\nkk = 3\n")
    with pytest.raises(ConfigError) as exc:
        load(Cfg, f, env={})
    assert "'kk'" in str(exc.value) and "k, p_on" in str(exc.value)


def test_bad_type_and_validation_errors_name_the_value() -> None:
    with pytest.raises(ConfigError, match="'many' is not a valid int"):
        load(Cfg, None, env={"EDGEVIB_ALERT__K": "many"})
    with pytest.raises(ConfigError, match="k=0; fix: use k >= 1"):
        load(Cfg, None, env={"EDGEVIB_ALERT__K": "0"})
    with pytest.raises(ConfigError, match="not a valid bool"):
        load(Cfg, None, env={"EDGEVIB_TLS": "maybe"})


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(Cfg, tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(Cfg, bad, env={})


def test_describe_lists_toml_keys_and_env_names() -> None:
    text = "\n".join(describe(Cfg))
    assert "alert.k" in text and "EDGEVIB_ALERT__K" in text
    assert "EDGEVIB_BROKER_URL" in text
    assert "[assets.<name>] table (TOML only)" in text
