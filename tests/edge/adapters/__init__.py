"""One contract harness per adapter of ``edgevib.edge.adapters`` (same name as its module there).

A harness gives the contract suite (tests/edge/test_contract_adapters.py) what only the
adapter knows: how to make a connected link, bring one online, take one or all offline, and
the agent config that builds the adapter through the registry. Adding an adapter means
adding its harness here too (a test checks that every registered name has one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.edge.adapters import memory, mqtt


@dataclass
class Harness:
    make: Callable[..., Any]  # make(client_id, **link options) -> a link; connected unless connect=False
    start: Callable[[Any], None]  # bring a link made with connect=False online, subscriptions confirmed
    offline: Callable[[Any], None]  # take this one link offline (publishing is then refused)
    outage: Callable[[], None]  # the medium goes away and comes back; every link reconnects
    agent_config: dict[str, Any]  # load_agent_config overrides that select this adapter as source and sink
    links: list[Any] = field(default_factory=list)


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], Harness]] = {"memory": memory.harness, "mqtt": mqtt.harness}
# adapters that need something outside the process (a broker): run with the integration marker
MARKS: dict[str, list[pytest.MarkDecorator]] = {"mqtt": [pytest.mark.integration]}
