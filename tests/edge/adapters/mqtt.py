"""Contract harness of the ``mqtt`` adapter: a private Mosquitto that may be stopped and restarted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from edgevib.edge.mqtt import MqttLink

from edgevib.testing import wait_until

if TYPE_CHECKING:
    from tests.edge.adapters import Harness


def harness(request: pytest.FixtureRequest) -> Harness:
    from tests.edge.adapters import Harness

    broker = request.getfixturevalue("broker")
    links: list[Any] = []

    def make(cid: str, **kw: Any) -> MqttLink:
        link = MqttLink(broker.url, cid, reconnect=(1, 1), **kw)
        links.append(link)
        if kw.get("connect", True):
            assert link.wait_connected(5), "could not connect to the private broker"
        return link

    def start(link: MqttLink) -> None:
        link.start()
        assert link.wait_connected(5), "could not connect to the private broker"

    def outage() -> None:
        broker.stop()
        wait_until(lambda: not any(x.connected for x in links), 5, "every link to notice the outage")
        broker.start()
        wait_until(lambda: all(x.connected for x in links), 10, "every link to reconnect")

    return Harness(make, start, lambda link: link.close(), outage,
                   {"broker_url": broker.url, "sink": {"type": "mqtt"}, "source": {"type": "mqtt"}}, links)
