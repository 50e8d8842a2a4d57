"""Size limits on what the agent receives, all derived from ``max_frame_samples``.

A message is refused in the transport callback, before it is queued, when it is longer
than the largest legitimate message on its topic: a frame as large as :func:`decode
<edgevib.protocol.frames.decode>` accepts for ``max_frame_samples`` (44 + 4 x samples bytes,
binary or JSON), and
:data:`MAX_MESSAGE_BYTES <edgevib.protocol.MAX_MESSAGE_BYTES>` for commands, model
update chunks (< 200 KB each, edgevib/protocol/updates.py) and shaft-speed topics. The broker
(deploy/mosquitto/mosquitto.conf) and the MQTT 5 maximum packet size use the largest of
them, plus the packet's own overhead (docs/security.md, "Message size limits").

>>> limit = message_limit(65_536)
>>> limit("edgevib/v1/s/g/sensors/de/raw", b"EVIB..."), limit("edgevib/v1/s/g/cmd", b"{}")
(262188, 262144)
>>> largest_message(65_536), max_packet(65_536)
(262188, 263212)
"""

from __future__ import annotations

from edgevib.edge.source import SizeLimit

from edgevib.protocol import MAX_MESSAGE_BYTES
from edgevib.protocol.frames import max_binary_bytes, max_json_bytes

# An MQTT PUBLISH beyond its payload: fixed header (<= 5 bytes), topic (2 + <= 220 bytes for
# edgevib/v1/<site>/<gateway>/sensors/<sensor>/raw with 64-character names), packet id (2)
# and MQTT 5 properties (none sent by edgevib publishers; a few bytes if a broker adds some).
PACKET_OVERHEAD = 1024


def message_limit(max_frame_samples: int) -> SizeLimit:
    """topic, payload -> the largest payload accepted (cheap: runs in the network thread)."""
    frame_bytes = max(max_binary_bytes(max_frame_samples), max_json_bytes(max_frame_samples))

    def limit(topic: str, payload: bytes) -> int:
        # a frame topic ends in /raw (edgevib/protocol Topics.raw); binary and JSON share one bound
        return frame_bytes if topic.endswith("/raw") else MAX_MESSAGE_BYTES

    return limit


def largest_message(max_frame_samples: int) -> int:
    """The largest legitimate payload on any topic the agent subscribes to."""
    return max(max_binary_bytes(max_frame_samples), max_json_bytes(max_frame_samples), MAX_MESSAGE_BYTES)


def max_packet(max_frame_samples: int) -> int:
    """The MQTT packet size limit for the agent's link and the broker: the largest message + overhead."""
    return largest_message(max_frame_samples) + PACKET_OVERHEAD
