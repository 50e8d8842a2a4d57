"""Class names for bearing-fault diagnosis and their fault types.

A class name is the fault type plus the fault size in mils (``IR007`` = inner race,
0.007 in); outer-race faults away from the standard @6 position carry it
(``OR007@3``) so they stay out of :data:`CLASSES_10` but remain usable in subsets.

>>> class_name("OR", 0.021, "@6"), class_name("OR", 0.007, "@3"), class_name("normal")
('OR021', 'OR007@3', 'normal')
>>> fault_type("OR007@3")
'OR'
>>> label_index("IR014", ("normal", "B", "IR", "OR"))
2
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from edgevib.models.errors import DataError

CLASSES_10: tuple[str, ...] = (
    "normal", "B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007", "OR014", "OR021",
)
FAULT_TYPES: tuple[str, ...] = ("normal", "B", "IR", "OR")
STANDARD_OR_POSITION = "@6"

_NAME = re.compile(r"^(normal|B|IR|OR)(\d{3})?(@\d+)?$")


def class_name(label: str, size_in: float = 0.0, or_position: str = "") -> str:
    """``("IR", 0.007)`` -> ``"IR007"``; OR away from @6 -> ``"OR007@3"``."""
    if label == "normal":
        return "normal"
    if label not in FAULT_TYPES:
        raise DataError("models.classes", f"label {label!r}", f"use one of {', '.join(FAULT_TYPES)}")
    if not size_in > 0:
        raise DataError("models.classes", f"fault size {size_in!r} in for label {label!r}",
                        "give the fault diameter in inches, e.g. 0.007")
    name = f"{label}{round(size_in * 1000):03d}"
    if label == "OR" and or_position and or_position != STANDARD_OR_POSITION:
        name += or_position
    return name


def fault_type(cls: str) -> str:
    """``"IR021"`` -> ``"IR"``; ``"normal"`` -> ``"normal"``."""
    m = _NAME.match(cls)
    if m is None:
        raise DataError("models.classes", f"class name {cls!r}",
                        "use normal, a fault type (B, IR, OR) or e.g. IR007, OR021@3")
    return m.group(1)


def label_index(cls: str, classes: Sequence[str]) -> int | None:
    """Index of ``cls`` in ``classes``; a bare fault type in ``classes`` matches every size."""
    if cls in classes:
        return list(classes).index(cls)
    ft = fault_type(cls)
    if ft in classes and ft != cls:
        return list(classes).index(ft)
    return None


def parse_classes(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None``/``"10"`` -> :data:`CLASSES_10`; ``"4"`` -> fault types; else a list of names."""
    if spec is None or spec == "10":
        return CLASSES_10
    if spec == "4":
        return FAULT_TYPES
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s]
    for c in items:
        fault_type(c)
    if len(set(items)) != len(items) or len(items) < 2:
        raise DataError("models.classes", f"class list {items!r}", "give at least two distinct classes")
    return tuple(items)
