"""Errors of ``edgevib.models.compress``.

>>> str(CompressError("models.compress.slimming", "prune_ratio=1.5", "use a fraction in [0, 1)"))
'models.compress.slimming: prune_ratio=1.5; fix: use a fraction in [0, 1)'
"""

from __future__ import annotations

from edgevib.models.errors import ModelsError


class CompressError(ModelsError):
    """A compression step got an input it cannot work with (wrong model kind, bad option)."""
