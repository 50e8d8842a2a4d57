"""The cloud configuration (cloud/config.py): errors name the field and the fix; the severity
vocabulary and indicator roll-up windows reach the job."""

from __future__ import annotations

import pytest
from edgevib.cloud.config import load_config

from edgevib.errors import ConfigError


def test_config_errors_name_the_field_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="window_s"):
        load_config(None, env={"EDGEVIB_JOB__WINDOW_S": "1.5"})
    with pytest.raises(ConfigError, match="store_url"):
        load_config(None, env={"EDGEVIB_STORE_URL": "mysql://x"})
    with pytest.raises(ConfigError, match="min_incident_severity"):
        load_config(None, env={"EDGEVIB_JOB__MIN_INCIDENT_SEVERITY": "urgent"})


def test_min_incident_severity_uses_the_protocol_vocabulary() -> None:
    from edgevib.cloud.flink.sql import views

    cfg = load_config(None, env={})
    assert cfg.job.min_incident_severity == "warning"
    serious = [v for v in views(cfg) if "VIEW serious" in v][0]
    assert "'warning', 'critical'" in serious and "'info'" not in serious
    crit = load_config(None, env={"EDGEVIB_JOB__MIN_INCIDENT_SEVERITY": "critical"})
    assert "IN ('critical')" in [v for v in views(crit) if "VIEW serious" in v][0]
    # The old names fail with the new name to use.
    for old, new in (("low", "info"), ("medium", "warning"), ("high", "critical")):
        with pytest.raises(ConfigError, match=f"min_incident_severity='{old}'.*{new}"):
            load_config(None, env={"EDGEVIB_JOB__MIN_INCIDENT_SEVERITY": old})


def test_indicator_rollup_windows_are_validated() -> None:
    import tomllib

    from edgevib.cloud.config import to_toml

    cfg = load_config(None, env={"EDGEVIB_JOB__INDICATOR_ROLLUPS_S": "60,600"})
    assert cfg.job.indicator_rollups_s == (60.0, 600.0)
    # the job process reads the config back from TOML (cloud/flink/runner.py)
    assert tomllib.loads(to_toml(cfg))["job"]["indicator_rollups_s"] == [60.0, 600.0]
    with pytest.raises(ConfigError, match="indicator_rollups_s"):
        load_config(None, env={"EDGEVIB_JOB__INDICATOR_ROLLUPS_S": "60,0.5"})
