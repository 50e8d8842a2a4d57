"""The dashboard (:mod:`.dashboard`) and the views behind its pages.
"""

__all__ = ["alert_view", "dashboard", "guard", "heartbeats", "models_view", "plant", "sensor_data", "spectra"]
