"""Hostile input stays bounded (issue 19): message sizes and the inbox's byte budget, with the
in-memory link (labels and the heartbeat: test_agent_bounds.py; the MQTT flood: integration/)."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.config import load_agent_config
from edgevib.edge.limits import largest_message, max_packet, message_limit
from edgevib.edge.memory import MemoryBus, MemoryLink
from edgevib.edge.source import MESSAGE_OVERHEAD

from edgevib import protocol as proto
from edgevib.errors import ConfigError
from edgevib.protocol.errors import FrameError
from edgevib.protocol.frames import (
    Frame,
    decode,
    encode,
    encode_json,
    max_binary_bytes,
    max_json_bytes,
)

T = proto.Topics("plant", "gw")


def _frame(n: int, seq: int = 0, value: float = 0.1) -> Frame:
    return Frame(seq, 10**18, 12000.0, np.full(n, value, np.float32))


# -- per-message limits: the same bounds as the decoder ----------------------------------------
@pytest.mark.parametrize("max_samples", [1024, 65_536])
def test_the_largest_legitimate_frames_pass_the_limit_and_one_byte_more_does_not(max_samples: int) -> None:
    limit = message_limit(max_samples)
    binary = encode(_frame(max_samples), "float32")
    assert len(binary) == max_binary_bytes(max_samples) == limit(T.raw("de"), binary)
    assert len(decode(binary, max_samples).samples) == max_samples
    # JSON shares the bound: the longest JSON frame that fits decodes, one byte more is oversized
    n = max_samples // 6
    js = encode_json(Frame(0, 10**18, 12000.0, np.full(n, -0.123456, np.float32)))
    js = js[:1] + b" " * (max_json_bytes(max_samples) - len(js)) + js[1:]
    assert len(js) == limit(T.raw("de"), js) == max_json_bytes(max_samples)
    assert len(decode(js, max_samples).samples) == n
    with pytest.raises(FrameError) as exc:
        decode(js[:1] + b" " + js[1:], max_samples)
    assert exc.value.reason == "oversized"
    assert largest_message(max_samples) == max(len(binary), proto.MAX_MESSAGE_BYTES)
    assert max_packet(max_samples) > largest_message(max_samples)


def test_commands_and_update_chunks_have_the_protocol_limit() -> None:
    limit = message_limit(65_536)
    for topic in (T.cmd, T.models, "plant/rpm/de"):
        assert limit(topic, b"{}") == proto.MAX_MESSAGE_BYTES
    assert limit(T.raw("de"), b"{") == limit(T.raw("de"), b"\0") == max_binary_bytes(65_536)


# -- the inbox: bytes as well as count ----------------------------------------------------------
def test_inbox_byte_budget_drops_and_counts_and_frees_on_poll() -> None:
    bus = MemoryBus()
    tx = MemoryLink(bus, "tx")
    rx = MemoryLink(bus, "rx", inbox_size=1000, inbox_bytes=10 * (1000 + MESSAGE_OVERHEAD + 16), max_message=2000)
    rx.subscribe("t/#")
    for _ in range(12):
        tx.publish("t/raw", bytes(1000))
    tx.publish("t/raw", bytes(2001))
    st = rx.stats()
    assert (st["received"], st["overflow_bytes"], st["too_large"], st["overflow"]) == (10, 2, 1, 0)
    assert st["bytes"] == 10 * (1000 + len("t/raw") + MESSAGE_OVERHEAD)
    while rx.poll(0) is not None:
        pass
    assert rx.stats()["bytes"] == 0
    tx.publish("t/raw", bytes(1000))  # room again once drained
    assert rx.stats()["received"] == 11


def test_inbox_bytes_must_fit_the_largest_frame() -> None:
    with pytest.raises(ConfigError) as exc:
        load_agent_config(None, env={"EDGEVIB_INBOX_BYTES": "100000"})
    assert "inbox_bytes=100000" in str(exc.value) and "max_frame_samples" in str(exc.value)
    cfg = load_agent_config(None, env={"EDGEVIB_INBOX_BYTES": "300000", "EDGEVIB_MAX_FRAME_SAMPLES": "4096"})
    assert cfg.inbox_bytes == 300_000
    assert load_agent_config(None, env={}).inbox_bytes >= 4 * largest_message(65_536)
