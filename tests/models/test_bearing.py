"""Bearing kinematics against the CWRU data center's published fault orders."""

from __future__ import annotations

import pytest
from edgevib.models.bearing import CWRU_DE_6205, DG_6308, GEOMETRIES, BearingGeometry
from edgevib.models.errors import ModelsError


def test_cwru_6205_matches_the_data_center() -> None:
    o = CWRU_DE_6205.orders()
    assert o.bpfi == pytest.approx(5.4152, rel=1e-4)
    assert o.bpfo == pytest.approx(3.5848, rel=1e-4)
    assert o.ftf == pytest.approx(0.39828, rel=1e-4)
    # the data center's "rolling element" figure is twice ball spin
    assert o.rolling_element == pytest.approx(4.7135, rel=1e-4)
    assert o.bsf == pytest.approx(4.7135 / 2, rel=1e-4)


def test_identities_hold_for_every_geometry() -> None:
    for g in GEOMETRIES.values():
        o = g.orders()
        assert o.bpfo + o.bpfi == pytest.approx(g.n_balls)
        assert o.bpfo == pytest.approx(g.n_balls * o.ftf)
        assert o.bpfi > o.bpfo > 1 > o.ftf > 0


def test_frequencies_scale_with_speed() -> None:
    f = CWRU_DE_6205.frequencies(1797)
    assert f.bpfi == pytest.approx(5.4152 * 1797 / 60, rel=1e-4)
    assert DG_6308.frequencies(3000).bpfo != pytest.approx(CWRU_DE_6205.frequencies(3000).bpfo, rel=0.05)


def test_contact_angle_lowers_the_ratio() -> None:
    flat = BearingGeometry(12, 10.0, 50.0, 0.0).orders()
    angled = BearingGeometry(12, 10.0, 50.0, 30.0).orders()
    assert angled.bpfo > flat.bpfo and angled.bpfi < flat.bpfi


@pytest.mark.parametrize("args", [(2, 1.0, 5.0), (9, 5.0, 5.0), (9, 1.0, 5.0, 95.0)])
def test_bad_geometry(args: tuple[float, ...]) -> None:
    with pytest.raises(ModelsError, match="models.bearing"):
        BearingGeometry(*args)
    with pytest.raises(ModelsError, match="rpm"):
        CWRU_DE_6205.frequencies(0)
