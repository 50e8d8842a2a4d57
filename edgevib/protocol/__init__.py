"""The wire protocol of edgevib: one home for every format that crosses MQTT.

Edge and cloud import it; neither defines a wire format of its own.

==========================  ==================================================================
module                      what travels
==========================  ==================================================================
:mod:`.topics`              topic names under one configurable prefix (builders and parser)
:mod:`.messages`            JSON alerts, heartbeats, model verdicts, indicators; severities
:mod:`.frames`              binary (and JSON) vibration frames, sensors -> agent
:mod:`.evidence`            binary evidence records (raw windows behind an alert), agent -> cloud
:mod:`.updates`             signed, chunked model updates, cloud -> agent, and their status
:mod:`.labels`              operators' labels on alerts, cloud -> anyone listening
:mod:`.errors`              :class:`ProtocolError`, :class:`FrameError`: a ``reason`` per drop
==========================  ==================================================================

The topic and JSON-message names are re-exported here (``from edgevib import protocol as
proto``; ``proto.Topics``, ``proto.parse_alert``); the binary codecs are used by module
(``from edgevib.protocol import frames``) since each has its own ``encode``/``decode``.
Everything here needs only numpy and the standard library, so a gateway can import it.

>>> from edgevib import protocol as proto
>>> t = proto.Topics("plant1", "gw-7", prefix="acme/vib")
>>> proto.parse_topic(t.alerts, prefix="acme/vib").kind
'alerts'
"""

from __future__ import annotations

from edgevib.protocol.errors import (
    FRAME_REASONS,
    PROTOCOL_REASONS,
    FrameError,
    ProtocolError,
    WireError,
)
from edgevib.protocol.messages import (
    ALERT_KINDS,
    ALERT_SCHEMA,
    ALERT_STATES,
    CONFIDENT_PROBABILITY,
    ENVELOPE_LINES,
    HEARTBEAT_SCHEMA,
    INDICATORS_SCHEMA,
    ISO_BOUNDARIES,
    ISO_FOUNDATIONS,
    ISO_GROUPS,
    ISO_ZONES,
    MAX_MESSAGE_BYTES,
    SEVERITIES,
    SPEED_SOURCES,
    VERDICT_EVIDENCE,
    VERDICTS,
    derive_severity,
    dumps,
    make_alert,
    make_heartbeat,
    make_indicators,
    parse_alert,
    parse_heartbeat,
    parse_indicators,
    parse_model_status,
    severity_at_least,
    severity_of,
    validate_alert,
    validate_heartbeat,
    validate_indicators,
    validate_model_status,
)
from edgevib.protocol.topics import (
    KINDS,
    NAME_MAX,
    PREFIX,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    TopicInfo,
    Topics,
    check_name,
    check_prefix,
    parse_topic,
    subscription,
)

__all__ = ["ISO_BOUNDARIES", "ISO_GROUPS", "ALERT_KINDS", "ALERT_SCHEMA", "ALERT_STATES", "CONFIDENT_PROBABILITY", "ENVELOPE_LINES",
           "FRAME_REASONS", "FrameError", "HEARTBEAT_SCHEMA", "INDICATORS_SCHEMA", "ISO_FOUNDATIONS", "ISO_ZONES",
           "KINDS", "MAX_MESSAGE_BYTES", "NAME_MAX", "PREFIX", "PROTOCOL_REASONS", "ProtocolError", "SEVERITIES",
           "SPEED_SOURCES", "STATUS_OFFLINE", "STATUS_ONLINE", "TopicInfo", "Topics", "VERDICTS",
           "VERDICT_EVIDENCE", "WireError", "check_name", "check_prefix", "derive_severity", "dumps", "make_alert",
           "make_heartbeat", "make_indicators", "parse_alert", "parse_heartbeat", "parse_indicators",
           "parse_model_status", "parse_topic", "severity_at_least", "severity_of", "subscription",
           "validate_alert", "validate_heartbeat", "validate_indicators", "validate_model_status"]
