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


def test_a_part_with_a_missing_extra_keeps_its_commands_and_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = cli.importlib.import_module

    def fake_import(name: str) -> object:
        if name == "edgevib.edge.cli":
            raise ModuleNotFoundError("No module named 'paho'", name="paho")
        return real_import(name)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    assert cli.main(["agent"]) == 3
    assert "pip install 'edgevib[edge]'" in capsys.readouterr().err


def test_a_broken_own_module_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_import(name: str) -> object:
        raise ModuleNotFoundError("No module named 'edgevib.edge.nope'", name="edgevib.edge.nope")

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()
