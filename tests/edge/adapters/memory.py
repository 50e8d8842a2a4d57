"""Contract harness of the ``memory`` adapter: a private bus per test."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from edgevib.edge.adapters.memory import bus
from edgevib.edge.memory import MemoryLink

if TYPE_CHECKING:
    from tests.edge.adapters import Harness


def harness(request: pytest.FixtureRequest) -> Harness:
    from tests.edge.adapters import Harness

    name = f"contract-{uuid.uuid4().hex[:8]}"
    b = bus(name)
    links: list[Any] = []

    def make(cid: str, **kw: Any) -> MemoryLink:
        link = MemoryLink(b, cid, **kw)
        links.append(link)
        return link

    def offline(link: MemoryLink) -> None:
        link.connected = False

    def outage() -> None:
        b.disconnect_all()
        for link in links:
            link.reconnect()

    return Harness(make, lambda link: link.start(), offline, outage,
                   {"sink": {"type": "memory", "options": {"bus": name}}, "source": {"type": "memory"}}, links)
