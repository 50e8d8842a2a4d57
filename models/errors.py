"""Errors of ``edgevib.models``: each names the component, the bad value and the fix.

>>> str(DataError("models.data", "file 'x.mat' not found", "pass an existing file"))
"models.data: file 'x.mat' not found; fix: pass an existing file"
"""

from __future__ import annotations

from edgevib.errors import FatalError


class ModelsError(FatalError):
    """Base class of the models package's errors (all fatal: fix the input)."""


class DataError(ModelsError):
    """A recording file is missing, unreadable or not in a recognised form."""


class SplitError(ModelsError):
    """A train/test split cannot be built, or it leaks (test windows overlap train windows)."""


class ContractError(ModelsError):
    """An ONNX model or its metadata does not follow the edgevib model contract."""
