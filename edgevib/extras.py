"""Import optional dependencies with an error that prints the install line.

>>> np = require("numpy", extra="edge", feature="demo")
>>> require("no_such_module_xyz", extra="train", feature="cnn training")
Traceback (most recent call last):
...
edgevib.errors.MissingExtraError: cnn training: missing module 'no_such_module_xyz'; fix: pip install 'edgevib[train]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgevib.errors import MissingExtraError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'edgevib[extra]'``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.split(".")[0] != exc.name.split(".")[0]:
            raise  # a dependency of the module itself is broken: show the real error
        raise MissingExtraError(module, extra, feature) from exc
