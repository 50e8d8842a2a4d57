"""The ONNX model contract: tensor layout plus ``edgevib.*`` metadata.

Input ``x`` float32 [N, 1, W] (raw g at ``sample_rate``), output ``probs`` float32 [N, C]
with C == len(classes). A model may declare a second input ``orders`` float32 [N, F] in
``edgevib.aux_input`` (today only ``edgevib.orders/1``: :mod:`edgevib.models.orders`), which
the agent computes from each sensor's bearing and speed; single-input models are unchanged.
:func:`read_meta` and :func:`check_contract` need only onnxruntime (the edge install);
``onnx`` is imported only to write a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgevib.models.classes import fault_type
from edgevib.models.errors import ContractError, DataError
from edgevib.models.orders import FEATURES as ORDER_FEATURES
from edgevib.models.orders import KIND as ORDERS_KIND

from edgevib.extras import require

_COMP = "models.contract"
PREFIX = "edgevib."
KEYS = ("classes", "sample_rate", "window", "hop", "arch", "version", "trained_on", "metrics")
INPUT, OUTPUT = "x", "probs"
AUX_INPUT = "orders"  # the optional second input, declared by ``edgevib.aux_input``
AUX_KINDS = {ORDERS_KIND: len(ORDER_FEATURES)}  # kind -> feature count


@dataclass(frozen=True)
class ModelMeta:
    """What a deployed model promises: its classes, rate, window and provenance."""

    classes: tuple[str, ...]
    sample_rate: float = 12000.0
    window: int = 2048
    hop: int = 1024
    arch: str = "unknown"
    version: str = "1"
    trained_on: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict, hash=False)
    aux_input: str = ""  # kind of the second input ('' = none), e.g. 'edgevib.orders/1'

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ContractError(_COMP, f"classes={list(self.classes)}", "give at least two distinct class names")
        try:
            for c in self.classes:
                fault_type(c)
        except DataError as exc:
            raise ContractError(_COMP, exc.problem, exc.fix) from exc
        if not (self.sample_rate > 0 and math.isfinite(self.sample_rate)):
            raise ContractError(_COMP, f"sample_rate={self.sample_rate}", "use the model's rate in Hz, e.g. 12000")
        if self.window < 1 or not 1 <= self.hop:
            raise ContractError(_COMP, f"window={self.window}, hop={self.hop}", "use positive sample counts")
        if not self.arch:
            raise ContractError(_COMP, "arch=''", "name the architecture, e.g. 'cnn'")
        if self.aux_input and self.aux_input not in AUX_KINDS:
            raise ContractError(_COMP, f"aux_input={self.aux_input!r}",
                                f"use one of {sorted(AUX_KINDS)} or none (a newer edgevib may know it)")

    @property
    def aux_size(self) -> int:
        """Features per window of the second input (0: single-input model)."""
        return AUX_KINDS.get(self.aux_input, 0)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries, all strings."""
        return {
            PREFIX + "classes": json.dumps(list(self.classes)),
            PREFIX + "sample_rate": repr(float(self.sample_rate)),
            PREFIX + "window": str(int(self.window)),
            PREFIX + "hop": str(int(self.hop)),
            PREFIX + "arch": self.arch,
            PREFIX + "version": self.version,
            PREFIX + "trained_on": self.trained_on,
            PREFIX + "metrics": json.dumps(dict(self.metrics), sort_keys=True),
            **({PREFIX + "aux_input": self.aux_input} if self.aux_input else {}),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "model") -> ModelMeta:
        """Parse ``metadata_props``; ``where`` (e.g. the file name) goes into errors."""
        missing = [k for k in KEYS if PREFIX + k not in props]
        if missing:
            raise ContractError(_COMP, f"{where} lacks metadata {[PREFIX + k for k in missing]}",
                                "write the model with edgevib.models.contract.save (or attach) ")
        try:
            classes = json.loads(props[PREFIX + "classes"])
            metrics = json.loads(props[PREFIX + "metrics"] or "{}")
            if not isinstance(classes, list) or not isinstance(metrics, dict):
                raise ValueError("classes must be a JSON list, metrics a JSON object")
            return cls(tuple(str(c) for c in classes), float(props[PREFIX + "sample_rate"]),
                       int(props[PREFIX + "window"]), int(props[PREFIX + "hop"]), props[PREFIX + "arch"],
                       props[PREFIX + "version"], props[PREFIX + "trained_on"], metrics,
                       props.get(PREFIX + "aux_input", ""))
        except (ValueError, TypeError) as exc:
            raise ContractError(_COMP, f"{where} has malformed metadata ({exc})", "re-save it with contract.save") from exc


def attach(model_proto: Any, meta: ModelMeta) -> Any:
    """Set the ``edgevib.*`` entries of ``model_proto.metadata_props`` (replacing old ones)."""
    keep = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(PREFIX)]
    del model_proto.metadata_props[:]
    for k, v in [*keep, *meta.to_props().items()]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = k, v
    return model_proto


def save(model_proto: Any, meta: ModelMeta, path: str | Path) -> ModelMeta:
    """Attach ``meta``, write the model, and check the written file against the contract."""
    onnx = require("onnx", extra="train", feature="saving ONNX models")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(attach(model_proto, meta), str(p))
    return check_contract(p)


def open_session(model: str | Path | bytes) -> tuple[Any, str]:
    """An onnxruntime session (CPU, one thread) and a printable name of the model."""
    ort = require("onnxruntime", extra="edge", feature="reading ONNX models")
    where = "model bytes" if isinstance(model, bytes) else repr(str(model))
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ContractError(_COMP, f"model file {where} not found", "pass the path of an .onnx model")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated exception types
        raise ContractError(_COMP, f"{where} is not a loadable ONNX model ({exc})",
                            "pass an .onnx file written by `edgevib models train`") from exc
    return sess, where


def meta_of_session(sess: Any, where: str = "model") -> ModelMeta:
    """The :class:`ModelMeta` of an onnxruntime ``InferenceSession``."""
    return ModelMeta.from_props(sess.get_modelmeta().custom_metadata_map, where)


def read_meta(model: str | Path | bytes) -> ModelMeta:
    """Metadata of an ONNX file (or its bytes), through onnxruntime only."""
    sess, where = open_session(model)
    return meta_of_session(sess, where)


def _dim_ok(dim: Any, want: int) -> bool:
    """A symbolic dimension (str/None) may hold ``want``; a fixed one must equal it."""
    return not isinstance(dim, int) or dim == want


def input_problem(ins: Any, meta: ModelMeta) -> tuple[str, str] | None:
    """``(what was found, fix)`` if a session's inputs break the contract for ``meta``, else None."""
    want = 2 if meta.aux_size else 1
    shape = list(ins[0].shape) if len(ins) == want else []
    ok = (len(ins) == want and ins[0].name == INPUT and ins[0].type == "tensor(float)" and len(shape) == 3
          and _dim_ok(shape[1], 1) and _dim_ok(shape[2], meta.window))
    if ok and want == 2:
        aux = list(ins[1].shape)
        ok = ins[1].name == AUX_INPUT and ins[1].type == "tensor(float)" and len(aux) == 2 and _dim_ok(aux[1], meta.aux_size)
    if ok:
        return None
    got = [(i.name, i.type, i.shape) for i in ins]
    fix = f"take one float32 input 'x' of shape [N, 1, {meta.window}]"
    if want == 2:
        fix += f" and float32 '{AUX_INPUT}' [N, {meta.aux_size}] ({meta.aux_input})"
    return str(got), fix


def check_contract(model: str | Path | bytes) -> ModelMeta:
    """Check layout and metadata, and that a dry run gives [N, C] probabilities; return the metadata."""
    sess, where = open_session(model)
    meta = meta_of_session(sess, where)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    problem = input_problem(ins, meta)
    if problem:
        raise ContractError(_COMP, f"{where} inputs {problem[0]}", problem[1])
    c = len(meta.classes)
    if not outs or outs[0].name != OUTPUT or outs[0].type != "tensor(float)" or len(outs[0].shape) != 2 \
            or not _dim_ok(outs[0].shape[1], c):
        got = [(o.name, o.type, o.shape) for o in outs]
        raise ContractError(_COMP, f"{where} outputs {got} with {c} classes {list(meta.classes)}",
                            f"output float32 'probs' of shape [N, {c}]")
    x = np.random.default_rng(0).normal(0, 0.1, (2, 1, meta.window)).astype(np.float32)
    feeds = {INPUT: x}
    if meta.aux_size:
        feeds[AUX_INPUT] = np.zeros((2, meta.aux_size), np.float32)
    try:
        probs = np.asarray(sess.run([OUTPUT], feeds)[0])
    except Exception as exc:  # onnxruntime's own exception types
        raise ContractError(_COMP, f"{where} fails on a [2, 1, {meta.window}] input ({exc})",
                            f"accept any batch size N with window {meta.window}") from exc
    if probs.shape != (2, c) or not np.all(np.isfinite(probs)) or not np.allclose(probs.sum(axis=1), 1, atol=1e-3):
        raise ContractError(_COMP, f"{where} returned {probs.shape} rows summing to {probs.sum(axis=1)}",
                            f"end the graph with a softmax over {c} classes")
    return meta
