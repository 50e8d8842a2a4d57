"""Trainers by name: each architecture is one small file in this folder that registers it.

The CLI (``edgevib models train --arch``), the retrain worker (``retrain.arch``) and the
model build find a trainer here, never by an ``if arch == ...`` of their own. Adding one is
a file ``models/arch/<name>.py`` calling :func:`register` plus its import at the end of
this module. Nothing heavy is imported until :meth:`Arch.load` (torch and onnx are optional
extras).

>>> from edgevib.models import arch
>>> arch.names()
('cnn', 'faulttype', 'nsae-lcn')
>>> arch.names(data="windows")
('cnn', 'nsae-lcn')
>>> arch.get("faulttype").data
'orders'
>>> arch.get("lstm")
Traceback (most recent call last):
...
edgevib.errors.ConfigError: models.arch: arch='lstm'; fix: use one of cnn, faulttype, nsae-lcn
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from edgevib.errors import ConfigError
from edgevib.extras import require

__all__ = ["DATA_KINDS", "Arch", "get", "names", "of_model", "register"]

# What a trainer learns from: raw windows [N, 1, W] (a WindowSet) or order features [N, 20].
DATA_KINDS: tuple[str, ...] = ("windows", "orders")


@dataclass(frozen=True)
class Arch:
    """One trainer. ``module`` has ``train(data, *, seed=..., **opts)`` returning a model with ``to_onnx()``."""

    name: str
    module: str
    zoo_name: str
    data: str = "windows"
    requires: tuple[tuple[str, str, str], ...] = ()  # (module, extra, feature) checked before import
    balanced: bool = False  # it samples classes balanced by itself: a retrain need not repeat rare ones
    retrain_opts: tuple[tuple[str, str], ...] = ()  # (train() keyword, retrain config field)
    compress: tuple[str, ...] = ()  # steps of the compression pipeline (models.compress) that apply; () = none
    checkpoint: str = ""  # "module:function" reading this arch's .pt checkpoint -> (model, meta dict)
    # Compression a retrained model gets before the promotion gate (retrain.compress = "auto"):
    # steps that need no training, so the loop stays within minutes; "" = ships as trained.
    retrain_compress: str = ""

    def __post_init__(self) -> None:
        if self.data not in DATA_KINDS:
            raise ConfigError("models.arch", f"{self.name}: data={self.data!r}", f"use one of {', '.join(DATA_KINDS)}")
        bad = [s for s in self.retrain_compress.split(",") if s and s not in self.compress]
        if bad:
            raise ConfigError("models.arch", f"{self.name}: retrain_compress={self.retrain_compress!r}",
                              f"use steps it lists in compress ({', '.join(self.compress) or 'none'})")

    def load_checkpoint(self, path: object) -> tuple[object, dict[str, str]]:
        """The teacher model and metadata of a ``.pt`` checkpoint of this arch (for compression)."""
        if not self.checkpoint:
            raise ConfigError("models.arch", f"{self.name}: no .pt checkpoint format",
                              f"compress its ONNX model (steps {', '.join(self.compress) or 'none'})")
        mod, _, fn = self.checkpoint.partition(":")
        for m, extra, feature in self.requires:
            require(m, extra=extra, feature=feature)
        loaded: tuple[object, dict[str, str]] = getattr(importlib.import_module(mod), fn)(path)
        return loaded

    def load(self) -> ModuleType:
        """The trainer module; a missing extra raises MissingExtraError naming it."""
        for mod, extra, feature in self.requires:
            require(mod, extra=extra, feature=feature)
        return importlib.import_module(self.module)


_REGISTRY: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    """Add ``arch`` under its name (a second registration of a name replaces the first)."""
    _REGISTRY[arch.name] = arch
    return arch


def names(data: str | None = None) -> tuple[str, ...]:
    """Registered names, sorted; only those learning from ``data`` if given."""
    return tuple(sorted(n for n, a in _REGISTRY.items() if data is None or a.data == data))


def of_model(arch: str) -> Arch:
    """The trainer a model came from, by its ``edgevib.arch`` metadata (``cnn+slim+int8`` -> cnn).

    >>> from edgevib.models import arch
    >>> arch.of_model("cnn+slim+merge+kd+int8").name, arch.of_model("faulttype-lr").name
    ('cnn', 'faulttype')
    """
    base = arch.split("+", 1)[0]
    if base in _REGISTRY:
        return _REGISTRY[base]
    # a variant tag after a dash (faulttype-lr) names the same trainer
    for name in sorted(_REGISTRY, key=len, reverse=True):
        if base.startswith(name + "-"):
            return _REGISTRY[name]
    return get(base)


def get(name: str) -> Arch:
    """The trainer registered as ``name``, else ConfigError listing the names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("models.arch", f"arch={name!r}", f"use one of {', '.join(names())}") from None


# The built-in trainers register themselves (one file each).
from edgevib.models.arch import cnn, faulttype, nsae_lcn  # noqa: E402, F401
