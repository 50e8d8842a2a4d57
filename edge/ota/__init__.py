"""Model updates on the gateway, in one place: the wire format is :mod:`edgevib.protocol.updates`.

- :mod:`.slot`: :class:`ModelSlot`, the model the agent runs now, the one it replaced and the
  probation left; shared by the agent (which reads it per batch) and the updater (which swaps it).
- :mod:`.updater`: :class:`Updater` (verify, shadow-run, swap, probation, rollback) and
  :func:`load_active` (the pushed model a restart runs).
- :mod:`.store`: :class:`ModelStore`, the verified files on disk and the atomically switched
  ``current.json``.
"""

from edgevib.edge.ota.slot import ModelSlot
from edgevib.edge.ota.store import ModelStore
from edgevib.edge.ota.updater import Updater, load_active

__all__ = ["ModelSlot", "ModelStore", "Updater", "load_active"]
