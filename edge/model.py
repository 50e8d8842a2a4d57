"""The edge's model contract: anything with ``meta`` and ``predict([N,1,W], context) -> [N,C]``.

``context`` gives each row's bearing fault frequencies (:class:`edgevib.models.orders.FaultHz`,
from the sensor's bearing and speed); a model that declares an ``orders`` input needs it,
others ignore it.

:class:`FunctionModel` wraps a plain function (tests, the in-memory demo);
:class:`edgevib.edge.runtime.OnnxModel` runs an ONNX file.

>>> import numpy as np
>>> from edgevib.models.contract import ModelMeta
>>> m = FunctionModel(ModelMeta(("normal", "IR007"), window=4),
...                   lambda x: np.tile([0.9, 0.1], (len(x), 1)).astype(np.float32))
>>> m.predict(np.zeros((3, 1, 4), np.float32)).shape
(3, 2)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from edgevib.edge.errors import ModelError
from edgevib.models.contract import ModelMeta
from edgevib.models.orders import FaultHz

F32 = npt.NDArray[np.float32]


@runtime_checkable
class Model(Protocol):
    """A classifier of fixed-size windows at ``meta.sample_rate``."""

    meta: ModelMeta
    name: str
    version: str
    sha256: str

    def predict(self, batch: F32, context: Sequence[FaultHz] | None = None) -> F32:
        """float32 [N, 1, W] in g (and each row's fault frequencies) -> float32 [N, C] probabilities."""
        ...


def describe(model: Model) -> dict[str, str]:
    """``{name, version, sha256}`` as alerts and heartbeats carry it."""
    return {"name": model.name, "version": model.version, "sha256": model.sha256}


def check_batch(batch: npt.ArrayLike, window: int, component: str = "edge.model") -> F32:
    """Return ``batch`` as contiguous float32 [N, 1, W], or raise ModelError naming the shape."""
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim == 2 and x.shape[1] == window:
        x = x[:, None, :]  # [N, W] is unambiguous: add the channel axis
    if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != window or x.shape[0] < 1:
        raise ModelError(component, f"input shape {tuple(x.shape)}", f"pass float32 [N, 1, {window}] with N >= 1")
    if not np.all(np.isfinite(x)):
        raise ModelError(component, "input holds NaN or inf", "drop windows with non-finite samples before predict")
    return x


def check_probs(probs: npt.ArrayLike, n: int, n_classes: int, component: str = "edge.model") -> F32:
    """Return ``probs`` as float32 [N, C], or raise ModelError (wrong shape or non-finite)."""
    p = np.asarray(probs, dtype=np.float32)
    if p.shape != (n, n_classes):
        raise ModelError(component, f"output shape {p.shape}", f"the model must return [N, {n_classes}] = [{n}, {n_classes}]")
    if not np.all(np.isfinite(p)):
        raise ModelError(component, "output holds NaN or inf", "check the model file; re-export it")
    return p


def run_model(model: Model, batch: F32, context: Sequence[FaultHz] | None) -> F32:
    """``model.predict``, handing ``context`` only to a model that declares a second input, so a
    single-input model (or a plain ``predict(batch)``) runs exactly as before."""
    return model.predict(batch, context) if model.meta.aux_size else model.predict(batch)


class FunctionModel:
    """A :class:`Model` from a function ``[N,1,W] -> [N,C]`` (for tests and demos)."""

    def __init__(self, meta: ModelMeta, fn: Callable[[F32], npt.ArrayLike], name: str = "function",
                 version: str | None = None) -> None:
        self.meta, self._fn, self.name = meta, fn, name
        self.version = version or meta.version
        self.sha256 = hashlib.sha256(f"{name}:{self.version}:{meta.classes}".encode()).hexdigest()

    def predict(self, batch: F32, context: Sequence[FaultHz] | None = None) -> F32:
        x = check_batch(batch, self.meta.window, f"edge.model[{self.name}]")
        return check_probs(self._fn(x), len(x), len(self.meta.classes), f"edge.model[{self.name}]")
