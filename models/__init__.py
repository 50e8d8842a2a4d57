"""Models: data, trainers (by name in :mod:`.arch`), the ONNX contract, evaluation and the registry.
"""

__all__ = ["arch", "bearing", "classes", "contract", "data", "evaluate", "faulttype", "orders", "registry", "rigout", "simulate", "split"]
