"""The light edge: the agent that windows vibration streams, runs a model and publishes alerts.

Public modules (the rest is the agent's own machinery): the agent, its config, the model
contract it runs, the source/sink contracts and their adapters, and the stream publisher.
"""

__all__ = ["adapters", "agent", "config", "errors", "model", "ota", "runtime", "sink", "source", "stream"]
