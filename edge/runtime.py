"""ONNX Runtime model wrapper following the edgevib ONNX contract (docs/design.md).

It imports ``onnxruntime`` only, never the ``onnx`` package (which a gateway does not
install); the module was ``edge/onnx.py`` until that name was seen to shadow ``onnx``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.edge.errors import ModelError
from edgevib.edge.model import F32, check_batch, check_probs
from edgevib.models.contract import (
    AUX_INPUT,
    INPUT,
    OUTPUT,
    ModelMeta,
    input_problem,
    meta_of_session,
)
from edgevib.models.errors import ContractError, ModelsError
from edgevib.models.orders import FaultHz, order_features

from edgevib.extras import require

log = logging.getLogger(__name__)


class OnnxModel:
    """A :class:`edgevib.edge.model.Model` backed by an ``InferenceSession`` on the CPU.

    ``threads`` sets intra-op parallelism (1 suits a small gateway sharing its cores);
    inter-op runs sequentially. ``sha256`` is the hash of the model file's bytes.

    Memory (``benchmarks/edge_memory.py``, docs/edge_footprint.md): memory-pattern planning is
    off (it plans buffers per input shape, and a gateway's batches take every size from 1 to
    ``batch_size``: after batches of 1..32, ``cnn.onnx`` 13.6 -> 10.8 MB of run-time RSS at the
    same speed within noise); the CPU arena stays on (off as well saved 1.6 MB more on
    ``cnn.onnx`` but cost ~25 % of its speed; ``cnn_small`` and ``faulttype`` showed no difference).
    """

    def __init__(self, model: str | Path | bytes, *, threads: int = 1, name: str | None = None,
                 memory_arena: bool = True, mem_pattern: bool = False) -> None:
        ort = require("onnxruntime", extra="edge", feature="ONNX inference")
        if threads < 1:
            raise ModelError("edge.runtime", f"threads={threads}", "use 1 or more intra-op threads")
        if isinstance(model, bytes):
            data, where = model, "model bytes"
        else:
            p = Path(model)
            if not p.is_file():
                raise ModelError("edge.runtime", f"model file {str(p)!r} not found", "pass the path of an .onnx model")
            data, where = p.read_bytes(), str(p)
        self.path = None if isinstance(model, bytes) else Path(model)
        self.sha256 = hashlib.sha256(data).hexdigest()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_cpu_mem_arena = memory_arena
        opts.enable_mem_pattern = mem_pattern
        try:
            self.session: Any = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            raise ModelError("edge.runtime", f"{where} is not a loadable ONNX model ({str(exc)[:200]})",
                             "pass an .onnx file written by `edgevib models train`") from exc
        try:
            self.meta: ModelMeta = meta_of_session(self.session, where)
        except ContractError as exc:
            raise ModelError("edge.runtime", exc.problem, exc.fix) from exc
        self.threads = threads
        self.name = name or self.meta.arch
        self.version = self.meta.version
        self._check_signature(where)
        log.info("loaded %s: %s v%s, %d classes, sha256 %s", where, self.name, self.version,
                 len(self.meta.classes), self.sha256[:12])

    def _check_signature(self, where: str) -> None:
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        c = len(self.meta.classes)
        problem = input_problem(ins, self.meta)
        if problem:
            raise ModelError("edge.runtime", f"{where} inputs {problem[0]}", problem[1])
        oshape = list(outs[0].shape) if outs else []
        if not outs or outs[0].name != OUTPUT or outs[0].type != "tensor(float)" or len(oshape) != 2 \
                or (isinstance(oshape[1], int) and oshape[1] != c):
            got = [(o.name, o.type, o.shape) for o in outs]
            raise ModelError("edge.runtime", f"{where} outputs {got} for {c} classes", f"output float32 'probs' [N, {c}]")

    def predict(self, batch: F32, context: Sequence[FaultHz] | None = None) -> F32:
        """float32 [N, 1, W] -> float32 [N, C]; ``context`` (one per row) feeds an ``orders`` input."""
        x = check_batch(batch, self.meta.window, "edge.runtime")
        feeds = {INPUT: x}
        if self.meta.aux_size:
            feeds[AUX_INPUT] = self._orders(x, context)
        try:
            out = self.session.run([OUTPUT], feeds)[0]
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError("edge.runtime", f"inference on {x.shape} failed ({str(exc)[:200]})",
                             "check the model accepts any batch size") from exc
        return check_probs(np.asarray(out), len(x), len(self.meta.classes), "edge.runtime")

    def _orders(self, x: F32, context: Sequence[FaultHz] | None) -> F32:
        """The ``orders`` input: each row's envelope features at its own fault frequencies."""
        if context is None or len(context) != len(x):
            raise ModelError("edge.runtime", f"model {self.name} needs each window's bearing fault frequencies "
                             f"(got {None if context is None else len(context)} for {len(x)} windows)",
                             "run it through the agent, which derives them from each sensor's bearing and rpm")
        try:
            # one vectorised pass for the whole batch, whatever mix of bearings and speeds: per
            # distinct speed it was one call each, and an agent estimating each sensor's speed
            # made a batch of 32 windows ~5 calls of ~6 rows (0.62 instead of 0.40 ms per window)
            return order_features(x[:, 0, :], self.meta.sample_rate, context)
        except ModelsError as exc:
            raise ModelError("edge.runtime", exc.problem, exc.fix) from exc
