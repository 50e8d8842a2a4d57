"""The speed estimate's running maximum (van Herk / Gil-Werman) equals the sliding-window max."""

from __future__ import annotations

import numpy as np
import pytest
from edgevib.edge.speed import _running


@pytest.mark.parametrize("seed", range(5))
def test_running_max_equals_the_sliding_window_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(20):
        v = rng.normal(size=int(rng.integers(2, 4000)))
        v[rng.integers(0, v.size, 3)] = np.inf if seed % 2 else -np.inf  # ties with the padding
        half = int(rng.integers(1, 60))
        want = np.lib.stride_tricks.sliding_window_view(np.pad(v, half, mode="reflect"), 2 * half + 1).max(axis=1)
        got = _running(v, half, "max")
        assert got.shape == v.shape
        np.testing.assert_array_equal(got, want)


def test_widening_a_running_max_equals_computing_it_anew(rng: np.random.Generator) -> None:
    from edgevib.edge.speed import _widen_max

    for _ in range(200):
        v = rng.normal(size=int(rng.integers(3, 500)))
        have = int(rng.integers(1, 20))
        half = have + int(rng.integers(0, 9))
        np.testing.assert_array_equal(_widen_max(v, _running(v, have, "max"), have, half), _running(v, half, "max"))
