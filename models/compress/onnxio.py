"""Read and write the edgevib ONNX metadata (``metadata_props``) of compressed models.

Quantization tools rebuild the graph and drop ``metadata_props``; :func:`save` puts them
back so a compressed model follows the same contract as the model it came from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgevib.models.compress.errors import CompressError

from edgevib.extras import require

onnx: Any = require("onnx", extra="train", feature="model compression")
log = logging.getLogger(__name__)
_COMP = "models.compress.onnxio"
REQUIRED = ("edgevib.classes", "edgevib.sample_rate", "edgevib.window", "edgevib.arch")


def read_meta(path_or_proto: str | Path | Any) -> dict[str, str]:
    """``metadata_props`` of an ONNX file or ``ModelProto`` as a dict."""
    proto = onnx.load(str(path_or_proto)) if isinstance(path_or_proto, str | Path) else path_or_proto
    return {p.key: p.value for p in proto.metadata_props}


def base_meta(classes: tuple[str, ...] | list[str], fs: float, window: int, arch: str, *,
              hop: int = 1024, trained_on: str = "", metrics: dict[str, Any] | None = None) -> dict[str, str]:
    """The contract's keys for a model built here (``edgevib.version`` from the package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("edgevib")
    except PackageNotFoundError:  # running from a bare checkout
        ver = "0+unknown"
    return {"edgevib.classes": json.dumps(list(classes)), "edgevib.sample_rate": str(int(fs)),
            "edgevib.window": str(int(window)), "edgevib.hop": str(int(hop)), "edgevib.arch": arch,
            "edgevib.version": ver, "edgevib.trained_on": trained_on,
            "edgevib.metrics": json.dumps(metrics or {})}


def set_meta(proto: Any, meta: dict[str, str]) -> Any:
    """Replace ``proto``'s ``metadata_props`` with ``meta`` (in place; returns ``proto``)."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CompressError(_COMP, f"metadata lacks {missing}", "start from base_meta() or the source model's metadata")
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in meta.items()})
    return proto


def save(proto: Any, meta: dict[str, str], path: str | Path) -> Path:
    """Write ``proto`` with ``meta`` as its ``metadata_props``; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    set_meta(proto, meta)
    onnx.save(proto, str(p))
    log.info("wrote %s (%d bytes, arch %s)", p, p.stat().st_size, meta["edgevib.arch"])
    return p


def compact(proto: Any) -> Any:
    """Shorten every internal tensor and node name, drop ``value_info`` and doc strings.

    Exporters and the quantizer write long names (``/net/blocks.0/blocks.0.0/Conv_output_0
    _QuantizeLinear_Output``) that cost more bytes than a slim INT8 model's weights; the graph
    input ``x`` and output ``probs`` keep their names. Returns a new ``ModelProto``.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    keep = {i.name for i in g.input} | {o.name for o in g.output} | {""}
    names: dict[str, str] = {}

    def short(n: str) -> str:
        if n in keep:
            return n
        return names.setdefault(n, f"t{len(names)}")

    for init in g.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del g.value_info[:]
    g.doc_string = ""
    out.doc_string = ""
    onnx.checker.check_model(out)
    return out
