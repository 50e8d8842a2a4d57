"""The closed loop's learning side: the evidence dataset, operators' labels, the retrain worker.
"""

__all__ = ["dataset", "labels", "retrain"]
