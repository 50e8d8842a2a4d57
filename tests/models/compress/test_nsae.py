from __future__ import annotations

import functools

import numpy as np
import pytest
from edgevib.models import nsae_lcn
from edgevib.models.compress import nsae, onnxio, quantize, table
from edgevib.models.compress.errors import CompressError

from .conftest import CLASSES, synthetic_windows


@functools.cache
def _model() -> nsae_lcn.NSAELCN:
    ws = synthetic_windows(12)
    return nsae_lcn.train(ws, seed=0, n_features=12, seg_len=64, stride=32, n_segments=1500, nsae_iters=30,
                          clf_iters=60)


@pytest.mark.slow  # trains a model
def test_pruned_nsae_keeps_accuracy_and_exports_int8() -> None:
    ws = synthetic_windows(12)
    model = _model()
    x, y = ws.x3d(), ws.y
    base = np.mean(model.predict(x) == y)
    small = nsae.prune_filters(model, x, y, keep=4)
    assert small.filters.shape == (4, 64) and small.clf_w.shape == (4, len(CLASSES))
    assert np.mean(small.predict(x) == y) >= base - 0.1
    proto = onnxio.set_meta(small.to_onnx(), onnxio.base_meta(CLASSES, 12000, ws.window, "nsae-lcn+prune"))
    q8 = quantize.quantize_int8_static(proto, x[::3])
    assert onnxio.read_meta(q8)["edgevib.arch"] == "nsae-lcn+prune+int8"
    assert np.mean(table.predict(table.session(q8), x) == small.predict(x)) >= 0.9


def test_keep_is_checked() -> None:
    with pytest.raises(CompressError, match="keep=0 of 12"):
        nsae.prune_filters(_model(), synthetic_windows(2).x3d(), keep=0)
