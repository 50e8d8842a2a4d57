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


def head_layers(net: Any) -> tuple[Any, Any, Any]:
    """``(fc1, bn, fc2)`` of the dense head, found by type so head reshuffles do not break us."""
    lin = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    bns = [m for m in net.head if isinstance(m, torch.nn.BatchNorm1d)]
    if len(lin) != 2 or len(bns) != 1:
        raise CompressError(_COMP, f"head with {len(lin)} Linear and {len(bns)} BatchNorm1d layers",
                            "compression expects the WDCNN head Linear-BN-ReLU-Linear (models.cnn)")
    return lin[0], bns[0], lin[1]


def arch_kwargs(net: Any) -> dict[str, Any]:
    """Constructor arguments of :func:`build_wdcnn` that reproduce ``net``'s shape."""
    conv0 = net.blocks[0][0]
    fc1, _, fc2 = head_layers(net)
    drop = [m.p for m in net.head if isinstance(m, torch.nn.Dropout)]
    kw = {
        "n_classes": int(fc2.out_features),
        "widths": [int(b[0].out_channels) for b in net.blocks],
        "first_kernel": int(conv0.kernel_size[0]),
        "first_stride": int(conv0.stride[0]),
        "hidden": int(fc1.out_features),
        "window": int(net.window),
        "dropout": float(drop[0]) if drop else 0.0,
        "pool_out": int(net.pool.output_size if isinstance(net.pool.output_size, int)
                        else net.pool.output_size[0]),
    }
    # optional envelope-spectrum branch of models.cnn: copied whole, never pruned
    env = getattr(net, "envelope", None)
    kw["envelope"] = int(env.bands) if env is not None else 0
    return kw


def rebuild(kw: dict[str, Any], **change: Any) -> Any:
    """A fresh WDCNN from :func:`arch_kwargs` output, with some arguments changed."""
    k = {**kw, **change}
    n = k.pop("n_classes")
    widths = k.pop("widths")
    return build_wdcnn(n, widths, **k)


def n_params(net: Any) -> int:
    """Trainable parameters (batch-norm running statistics excluded)."""
    return int(sum(p.numel() for p in net.parameters()))


_ROLES = ("fc1", "bn", "fc2")


def _head_index(net: Any) -> dict[str, int]:
    """Role -> index in ``net.head`` of the head's fc1, bn and fc2."""
    mods = head_layers(net)
    return {role: next(i for i, m in enumerate(net.head) if m is mod) for role, mod in zip(_ROLES, mods, strict=True)}


def _to_roles(net: Any) -> dict[str, Any]:
    """State dict with head keys named by role (``head:fc1.weight``), not by Sequential index."""
    role_of = {str(i): r for r, i in _head_index(net).items()}
    out = {}
    for k, v in net.state_dict().items():
        parts = k.split(".")
        out[f"head:{role_of[parts[1]]}." + ".".join(parts[2:]) if parts[0] == "head" else k] = v
    return out


def _from_roles(net: Any, sd: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_to_roles` for ``net``'s current head layout; index-keyed (older)
    checkpoints map their parameterised head layers to fc1, bn, fc2 in order."""
    idx = _head_index(net)
    legacy = sorted({int(k.split(".")[1]) for k in sd if k.startswith("head.")})
    remap = {str(i): r for i, r in zip(legacy, _ROLES, strict=False)}
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0].startswith("head:"):
            k = f"head.{idx[parts[0][5:]]}." + ".".join(parts[1:])
        elif parts[0] == "head":
            k = f"head.{idx[remap[parts[1]]]}." + ".".join(parts[2:])
        out[k] = v
    return out


def save_checkpoint(model: CNNModel, path: str | Path, meta: dict[str, str] | None = None) -> Path:
    """Write ``model`` as a ``.pt`` checkpoint (weights, shape, classes, sample rate, metadata)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "arch": arch_kwargs(model.net), "state_dict": _to_roles(model.net),
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
    try:
        net = rebuild({"envelope": 0, **ck["arch"]})  # checkpoints older than the envelope branch
        net.load_state_dict(_from_roles(net, ck["state_dict"]))
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CompressError(_COMP, f"{p.name!r} does not fit the current WDCNN ({str(exc)[:200]})",
                            "re-save the checkpoint from the current models.cnn (or retrain)") from exc
    net.eval()
    return CNNModel(net, tuple(ck["classes"]), float(ck["fs"]), arch=str(ck.get("model_arch", "cnn"))), \
        dict(ck.get("meta", {}))
