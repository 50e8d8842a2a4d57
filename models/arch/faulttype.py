"""The fault-type default (:mod:`edgevib.models.faulttype`): order features of windows from any rig.

Built by ``edgevib models faulttype``; the retrain worker adapts it (``retrain.method``,
:mod:`edgevib.models.adapt`) from order features, not windows.
"""

from edgevib.models.arch import Arch, register

ARCH = register(Arch(
    name="faulttype", module="edgevib.models.faulttype", zoo_name="faulttype", data="orders",
    requires=(("onnx", "train", "ONNX export"),),
))
