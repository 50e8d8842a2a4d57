"""The model slot the agent and the updater share: the model running now, the one it replaced,
and how many batches of probation are left.

The agent reads :attr:`ModelSlot.current` for every batch; the updater replaces it with
:meth:`ModelSlot.swap`, between batches, in the agent's own thread. State that depends on the
model's classes (the agent's alerters) belongs to whoever holds it: it subscribes with
:meth:`ModelSlot.on_swap` and is told ``(old, new)``, so the updater never edits the agent.

>>> import numpy as np
>>> from edgevib.edge.model import FunctionModel
>>> from edgevib.models.contract import ModelMeta
>>> def model(classes, version):
...     return FunctionModel(ModelMeta(classes, window=4), lambda x: np.ones((len(x), len(classes))) / len(classes),
...                          name="f", version=version)
>>> slot = ModelSlot(model(("normal", "IR", "OR"), "1"))
>>> slot.on_swap(lambda old, new: print("gone:", sorted(set(old.meta.classes) - set(new.meta.classes))))
>>> old = slot.swap(model(("normal", "IR"), "2"), probation=3)
gone: ['OR']
>>> slot.info["version"], slot.previous is old, slot.probation
('2', True, 3)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgevib.edge.model import Model, describe

log = logging.getLogger(__name__)
SwapListener = Callable[[Model, Model], None]  # (old, new), called after the swap


class ModelSlot:
    """``current`` (with its ``info``: name, version, sha256), ``previous`` and ``probation``."""

    def __init__(self, model: Model) -> None:
        self._current = model
        self.info: dict[str, str] = describe(model)  # as alerts and heartbeats carry it
        self.previous: Model | None = None  # in memory: what a rollback goes back to first
        self.probation = 0  # batches left in which a failure or a slow model rolls back; 0 = none
        self._listeners: list[SwapListener] = []

    @property
    def current(self) -> Model:
        return self._current

    @current.setter
    def current(self, model: Model) -> None:
        """Replace the model without telling listeners (a start-up choice, or a test's stand-in)."""
        self._current, self.info = model, describe(model)

    def on_swap(self, listener: SwapListener) -> None:
        """Call ``listener(old, new)`` after every :meth:`swap`."""
        self._listeners.append(listener)

    def swap(self, new: Model, *, probation: int = 0, keep_previous: bool = True) -> Model:
        """Run ``new`` from the next batch on, with ``probation`` batches of probation; the old model
        becomes ``previous`` (``keep_previous=False``, after a rollback: nothing to go back to in
        memory); tell the listeners; return the old model."""
        old = self._current
        self.current = new
        self.previous, self.probation = (old if keep_previous else None), probation
        for listener in self._listeners:
            listener(old, new)
        log.info("model swapped: %s v%s -> %s v%s", old.name, old.version, new.name, new.version)
        return old
