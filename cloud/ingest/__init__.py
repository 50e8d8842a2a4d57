"""MQTT ingest: bridges to the spool (:mod:`.bridge`, :mod:`.records`) and the evidence collector, on one durable session (:mod:`.session`, its paho client with a cheaper receive path in :mod:`.fastmqtt`).
"""

__all__ = ["bridge", "collector", "fastmqtt", "records", "session", "spool_guard"]
