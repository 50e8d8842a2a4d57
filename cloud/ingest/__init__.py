"""MQTT ingest: bridges to the spool (:mod:`.bridge`, :mod:`.records`) and the evidence collector, on one durable session (:mod:`.session`).
"""

__all__ = ["bridge", "collector", "records", "session", "spool_guard"]
