"""INT8 post-training quantization with ``onnxruntime.quantization``.

* :func:`quantize_int8_static`: QDQ format, per-channel int8 weights, uint8 activations
  (the U8S8 form ONNX Runtime's x86 kernels prefer), activation ranges calibrated on
  windows fed through :class:`WindowReader` (real or synthesised ones).
* :func:`quantize_int8_dynamic`: int8 weights, activations quantized on the fly; no
  calibration data, shown for comparison.

Only Conv/Gemm/MatMul are quantized: the per-window normalisation at the graph's input
(mean, RMS, divide) stays float, where int8 would throw away the signal's dynamic range.
Both keep the source model's ``metadata_props`` (quantization drops them) and name the
recipe in ``edgevib.arch``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.compress import onnxio
from edgevib.models.compress.errors import CompressError

from edgevib.extras import require

q: Any = require("onnxruntime.quantization", extra="edge", feature="INT8 quantization")
onnx: Any = require("onnx", extra="train", feature="INT8 quantization")
log = logging.getLogger(__name__)
_COMP = "models.compress.quantize"
OPS = ["Conv", "Gemm", "MatMul"]


class WindowReader(q.CalibrationDataReader):
    """Feeds calibration windows ``[N, 1, W]`` to the quantizer in batches of ``batch``."""

    def __init__(self, x: np.ndarray, batch: int = 32, input_name: str = "x") -> None:
        x = np.asarray(x, np.float32)
        if x.ndim != 3 or x.shape[1] != 1 or len(x) == 0 or not np.all(np.isfinite(x)):
            raise CompressError(_COMP, f"calibration windows of shape {x.shape}",
                                "pass finite float32 windows [N, 1, W] with N >= 1 (WindowSet.x3d())")
        self.x, self.batch, self.name, self.i = x, batch, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        out = {self.name: self.x[self.i:self.i + self.batch]}
        self.i += self.batch
        return out

    def rewind(self) -> None:
        self.i = 0


def _finish(out_path: Path, meta: dict[str, str], suffix: str) -> Any:
    proto = onnxio.compact(onnx.load(str(out_path)))
    arch = meta.get("edgevib.arch", "cnn")
    onnxio.set_meta(proto, {**meta, "edgevib.arch": arch if arch.endswith(suffix) else f"{arch}+{suffix}"})
    return proto


def _source(model: Any, tmp: Path) -> tuple[Path, dict[str, str]]:
    """Write ``model`` (proto or path) pre-processed (shape inference, BN folding) into ``tmp``."""
    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    meta = onnxio.read_meta(proto)
    raw, pre = tmp / "fp32.onnx", tmp / "pre.onnx"
    onnx.save(proto, str(raw))
    q.quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
    return pre, meta


def quantize_int8_static(model: Any, calib: np.ndarray, *, batch: int = 32, per_channel: bool = True,
                         method: str = "minmax") -> Any:
    """Static QDQ INT8 model (``ModelProto``) calibrated on windows ``calib`` [N, 1, W]."""
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    if method not in methods:
        raise CompressError(_COMP, f"calibration method {method!r}", f"use one of {sorted(methods)}")
    reader = WindowReader(calib, batch)
    with tempfile.TemporaryDirectory() as d:
        pre, meta = _source(model, Path(d))
        out = Path(d) / "int8.onnx"
        q.quantize_static(str(pre), str(out), reader, quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          op_types_to_quantize=OPS, calibrate_method=methods[method])
        return _finish(out, meta, "int8")


def quantize_int8_dynamic(model: Any, *, per_channel: bool = True) -> Any:
    """Dynamic INT8 model (int8 weights, activation scales computed at run time)."""
    with tempfile.TemporaryDirectory() as d:
        pre, meta = _source(model, Path(d))
        out = Path(d) / "dyn.onnx"
        q.quantize_dynamic(str(pre), str(out), per_channel=per_channel, weight_type=q.QuantType.QInt8,
                           op_types_to_quantize=OPS)
        return _finish(out, meta, "int8dyn")
