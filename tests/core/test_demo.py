"""`edgevib demo` end to end on a private broker: the failing bearing raises one fault alert."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgevib.broker import MosquittoProcess


@pytest.mark.integration
def test_demo_raises_the_developing_fault_and_nothing_on_healthy_sensors(broker: MosquittoProcess) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgevib.cli", "-q", "demo", "--broker", broker.url, "--duration", "40",
         "--onset", "5", "--healthy", "2", "--fault", "OR"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = [line for line in out.stdout.splitlines() if "alerts raised" in line]
    assert summary, out.stdout[-2000:]
    raised = summary[-1].split(":", 2)[-1]
    assert "pump:OR" in raised, out.stdout[-3000:]
    assert "fan" not in raised, out.stdout[-3000:]  # healthy sensors stay quiet
    assert "beat" in out.stdout  # heartbeats reached the monitor
