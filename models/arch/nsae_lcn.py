"""NSAE-LCN (Jia et al., :mod:`edgevib.models.nsae_lcn`): raw windows, numpy training, onnx export."""

from edgevib.models.arch import Arch, register

ARCH = register(Arch(
    name="nsae-lcn", module="edgevib.models.nsae_lcn", zoo_name="nsae_lcn",
    requires=(("onnx", "train", "ONNX export"),),
    retrain_opts=(("nsae_iters", "nsae_iters"), ("clf_iters", "clf_iters")),
    # its ONNX model quantises like any other; filter pruning is models.compress.nsae (not a pipeline step)
    compress=("int8",),
))
