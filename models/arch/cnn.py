"""The WDCNN-class 1D CNN (:mod:`edgevib.models.cnn`): raw windows, needs torch."""

from edgevib.models.arch import Arch, register

ARCH = register(Arch(
    name="cnn", module="edgevib.models.cnn", zoo_name="cnn",
    requires=(("torch", "train", "CNN training"), ("onnx", "train", "ONNX export")),
    balanced=True, retrain_opts=(("epochs", "cnn_epochs"), ("steps_per_epoch", "cnn_steps_per_epoch")),
))
