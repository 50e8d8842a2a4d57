"""Class names, fault types and class-list parsing."""

from __future__ import annotations

import pytest
from edgevib.models.classes import (
    CLASSES_10,
    FAULT_TYPES,
    class_name,
    fault_type,
    label_index,
    parse_classes,
)
from edgevib.models.errors import DataError


def test_standard_classes_fixed_order() -> None:
    assert CLASSES_10 == ("normal", "B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007", "OR014", "OR021")
    assert [fault_type(c) for c in CLASSES_10] == ["normal"] + ["B"] * 3 + ["IR"] * 3 + ["OR"] * 3


def test_or_positions_other_than_6_are_distinguishable() -> None:
    assert class_name("OR", 0.007, "@6") == "OR007"
    assert class_name("OR", 0.007, "@3") == "OR007@3"
    assert class_name("OR", 0.021, "@12") not in CLASSES_10
    assert fault_type("OR021@12") == "OR"
    assert class_name("IR", 0.028) == "IR028"


def test_label_index_with_fault_types() -> None:
    assert label_index("OR007@3", CLASSES_10) is None
    assert label_index("OR007@3", FAULT_TYPES) == 3
    assert label_index("normal", FAULT_TYPES) == 0
    assert label_index("B014", CLASSES_10) == 2


def test_parse_classes() -> None:
    assert parse_classes(None) == CLASSES_10
    assert parse_classes("4") == FAULT_TYPES
    assert parse_classes("normal, IR007,OR007@3") == ("normal", "IR007", "OR007@3")


@pytest.mark.parametrize("bad", ["XR007", "normal,normal", "IR"])
def test_bad_class_lists_name_the_value(bad: str) -> None:
    with pytest.raises(DataError, match="models.classes"):
        parse_classes(bad)


def test_bad_label() -> None:
    with pytest.raises(DataError, match="'ZZ'"):
        class_name("ZZ", 0.007)
    with pytest.raises(DataError, match="fault size"):
        class_name("IR", 0.0)
