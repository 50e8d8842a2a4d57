"""ONNX Runtime model wrapper following the edgevib ONNX contract (docs/design.md).

Named ``onnx.py`` inside the edge package, but it imports ``onnxruntime`` only,
never the ``onnx`` package.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.edge.errors import ModelError
from edgevib.edge.model import F32, check_batch, check_probs
from edgevib.models.contract import INPUT, OUTPUT, ModelMeta, meta_of_session
from edgevib.models.errors import ContractError

from edgevib.extras import require

log = logging.getLogger(__name__)


class OnnxModel:
    """A :class:`edgevib.edge.model.Model` backed by an ``InferenceSession`` on the CPU.

    ``threads`` sets intra-op parallelism (1 suits a small gateway sharing its cores);
    inter-op runs sequentially. ``sha256`` is the hash of the model file's bytes.
    """

    def __init__(self, model: str | Path | bytes, *, threads: int = 1, name: str | None = None) -> None:
        ort = require("onnxruntime", extra="edge", feature="ONNX inference")
        if threads < 1:
            raise ModelError("edge.onnx", f"threads={threads}", "use 1 or more intra-op threads")
        if isinstance(model, bytes):
            data, where = model, "model bytes"
        else:
            p = Path(model)
            if not p.is_file():
                raise ModelError("edge.onnx", f"model file {str(p)!r} not found", "pass the path of an .onnx model")
            data, where = p.read_bytes(), str(p)
        self.path = None if isinstance(model, bytes) else Path(model)
        self.sha256 = hashlib.sha256(data).hexdigest()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session: Any = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            raise ModelError("edge.onnx", f"{where} is not a loadable ONNX model ({str(exc)[:200]})",
                             "pass an .onnx file written by `edgevib models train`") from exc
        try:
            self.meta: ModelMeta = meta_of_session(self.session, where)
        except ContractError as exc:
            raise ModelError("edge.onnx", exc.problem, exc.fix) from exc
        self.threads = threads
        self.name = name or self.meta.arch
        self.version = self.meta.version
        self._check_signature(where)
        log.info("loaded %s: %s v%s, %d classes, sha256 %s", where, self.name, self.version,
                 len(self.meta.classes), self.sha256[:12])

    def _check_signature(self, where: str) -> None:
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        w, c = self.meta.window, len(self.meta.classes)
        shape = list(ins[0].shape) if len(ins) == 1 else []
        fixed = [d if isinstance(d, int) else None for d in shape]
        if len(ins) != 1 or ins[0].name != INPUT or ins[0].type != "tensor(float)" or len(shape) != 3 \
                or fixed[1] not in (None, 1) or fixed[2] not in (None, w):
            got = [(i.name, i.type, i.shape) for i in ins]
            raise ModelError("edge.onnx", f"{where} inputs {got}", f"take one float32 input 'x' of shape [N, 1, {w}]")
        oshape = list(outs[0].shape) if outs else []
        if not outs or outs[0].name != OUTPUT or outs[0].type != "tensor(float)" or len(oshape) != 2 \
                or (isinstance(oshape[1], int) and oshape[1] != c):
            got = [(o.name, o.type, o.shape) for o in outs]
            raise ModelError("edge.onnx", f"{where} outputs {got} for {c} classes", f"output float32 'probs' [N, {c}]")

    def predict(self, batch: F32) -> F32:
        """float32 [N, 1, W] -> float32 [N, C]."""
        x = check_batch(batch, self.meta.window, "edge.onnx")
        try:
            out = self.session.run([OUTPUT], {INPUT: x})[0]
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError("edge.onnx", f"inference on {x.shape} failed ({str(exc)[:200]})",
                             "check the model accepts any batch size") from exc
        return check_probs(np.asarray(out), len(x), len(self.meta.classes), "edge.onnx")
