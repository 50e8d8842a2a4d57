"""The heavy edge / cloud: ingest (bridges), the Flink job, the store, the web app, learning and rollout.
"""

__all__ = ["config", "errors", "flink", "ingest", "learning", "ops", "retention", "rollout", "store", "web"]
