from __future__ import annotations

import subprocess
import sys

import pytest

from edgevib import cli


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: edgevib" in capsys.readouterr().out


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "edgevib.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("edgevib ")
