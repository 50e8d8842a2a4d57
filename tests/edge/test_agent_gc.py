"""The agent process freezes what exists before its loop (modules, model, config) out of the
cyclic collector's sight: a full collection then walks only what the loop creates (issue 15:
a ~10 ms full collection stalled every window waiting behind it). A caller's thread keeps its
collector as it was."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest
from edgevib.edge import cli as edge_cli
from edgevib.edge.agent import Agent
from edgevib.edge.config import load_agent_config


def _run_and_see(broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_thread: bool) -> list[int]:
    seen: list[int] = []

    def loop(self: Agent, stop: threading.Event) -> None:  # stands in for the loop: what is frozen now
        seen.append(gc.get_freeze_count())

    monkeypatch.setattr(Agent, "run", loop)
    cfg = load_agent_config(None, env={}, broker_url=broker.url, site="plant", gateway="gw",
                            outbox={"path": str(tmp_path / "ob.sqlite")})
    if in_thread:
        t = threading.Thread(target=edge_cli.run_agent, args=(cfg,))
        t.start()
        t.join(30)
    else:
        assert edge_cli.run_agent(cfg) == 0
    return seen


def test_the_agent_process_freezes_its_start_up_objects(broker: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert gc.get_freeze_count() == 0
    seen = _run_and_see(broker, tmp_path, monkeypatch, in_thread=False)
    assert len(seen) == 1 and seen[0] > 10_000  # modules, the model, the config: tens of thousands of objects
    assert gc.get_freeze_count() == 0  # given back to the collector when the agent returns


def test_an_agent_in_a_callers_thread_leaves_the_collector_alone(broker: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run_and_see(broker, tmp_path, monkeypatch, in_thread=True) == [0]
