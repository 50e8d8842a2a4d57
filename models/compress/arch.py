"""Read the shape of a WDCNN, rebuild it at other widths, and save/load ``.pt`` checkpoints.

Slimming needs the torch weights (the ONNX export folds batch norm away), so the pipeline
works from a checkpoint: a plain dict of tensors and numbers, loadable with
``torch.load(weights_only=True)`` (no pickled code).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgevib.models.cnn import CNNModel, build_wdcnn
from edgevib.models.compress.errors import CompressError

from edgevib.extras import require

torch: Any = require("torch", extra="train", feature="model compression")
log = logging.getLogger(__name__)
_COMP = "models.compress.arch"
FORMAT = "edgevib.cnn.v1"


def arch_kwargs(net: Any) -> dict[str, Any]:
    """Constructor arguments of :func:`build_wdcnn` that reproduce ``net``'s shape."""
    conv0 = net.blocks[0][0]
    return {
        "n_classes": int(net.head[-1].out_features),
        "widths": [int(b[0].out_channels) for b in net.blocks],
        "first_kernel": int(conv0.kernel_size[0]),
        "first_stride": int(conv0.stride[0]),
        "hidden": int(net.head[2].out_features),
        "window": int(net.window),
        "dropout": float(net.head[1].p),
        "pool_out": int(net.pool.output_size if isinstance(net.pool.output_size, int)
                        else net.pool.output_size[0]),
    }


def rebuild(kw: dict[str, Any], **change: Any) -> Any:
    """A fresh WDCNN from :func:`arch_kwargs` output, with some arguments changed."""
    k = {**kw, **change}
    n = k.pop("n_classes")
    widths = k.pop("widths")
    return build_wdcnn(n, widths, **k)


def n_params(net: Any) -> int:
    """Trainable parameters (batch-norm running statistics excluded)."""
    return int(sum(p.numel() for p in net.parameters()))


def save_checkpoint(model: CNNModel, path: str | Path, meta: dict[str, str] | None = None) -> Path:
    """Write ``model`` as a ``.pt`` checkpoint (weights, shape, classes, sample rate, metadata)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "arch": arch_kwargs(model.net), "state_dict": model.net.state_dict(),
                "classes": list(model.classes), "fs": float(model.fs), "model_arch": model.arch,
                "meta": dict(meta or {})}, p)
    return p


def load_checkpoint(path: str | Path) -> tuple[CNNModel, dict[str, str]]:
    """Read a checkpoint written by :func:`save_checkpoint`: the model and its metadata dict."""
    p = Path(path)
    if not p.is_file():
        raise CompressError(_COMP, f"checkpoint {str(p)!r} not found", "pass a .pt file written by the pipeline")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign file
        raise CompressError(_COMP, f"{p.name!r} is not a readable torch checkpoint ({exc})",
                            "pass a .pt written by edgevib.models.compress.arch.save_checkpoint") from exc
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CompressError(_COMP, f"{p.name!r} has format {ck.get('format') if isinstance(ck, dict) else type(ck)!r}",
                            f"pass a checkpoint of format {FORMAT} (save_checkpoint)")
    net = rebuild(ck["arch"])
    net.load_state_dict(ck["state_dict"])
    net.eval()
    return CNNModel(net, tuple(ck["classes"]), float(ck["fs"]), arch=str(ck.get("model_arch", "cnn"))), \
        dict(ck.get("meta", {}))
