"""The WDCNN-class 1D CNN (:mod:`edgevib.models.cnn`): raw windows, needs torch."""

from edgevib.models.arch import Arch, register

ARCH = register(Arch(
    name="cnn", module="edgevib.models.cnn", zoo_name="cnn",
    requires=(("torch", "train", "CNN training"), ("onnx", "train", "ONNX export")),
    balanced=True, retrain_opts=(("epochs", "cnn_epochs"), ("steps_per_epoch", "cnn_steps_per_epoch")),
    # every step of models.compress.pipeline: slimming, merging and distillation work on the WDCNN's layers
    compress=("slim", "align", "merge", "kd", "nkd", "int8", "dfq", "zaq"),
    checkpoint="edgevib.models.compress.arch:load_checkpoint",
    # Static INT8 calibrated on the base windows: seconds, and it takes the envelope branch the
    # trainer adds by default, which DFQ does not (docs/compression.md: 3.3x smaller, ~2x faster
    # at batch 32, same CWRU accuracy); the slimming recipe needs minutes of training per model.
    retrain_compress="int8",
))
