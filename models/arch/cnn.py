"""The WDCNN-class 1D CNN (:mod:`edgevib.models.cnn`): raw windows, needs torch."""

from edgevib.models.arch import Arch, register

ARCH = register(Arch(
    name="cnn", module="edgevib.models.cnn", zoo_name="cnn",
    requires=(("torch", "train", "CNN training"), ("onnx", "train", "ONNX export")),
    balanced=True, retrain_opts=(("epochs", "cnn_epochs"), ("steps_per_epoch", "cnn_steps_per_epoch")),
    # every step of models.compress.pipeline: slimming, merging and distillation work on the WDCNN's layers
    compress=("slim", "align", "merge", "kd", "nkd", "int8", "dfq", "zaq"),
    checkpoint="edgevib.models.compress.arch:load_checkpoint",
))
