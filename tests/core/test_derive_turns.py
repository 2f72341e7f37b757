"""derive_trajectory on scans over a whole turn recorded modulo 360 and not starting
at 0: interlaced passes and rows that each cross 360 -> 0 are recognised, and the
derived map links each point to its neighbours in angle (the known answer)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.trajectory import derive_trajectory, make_trajectory
from tests.support.trajectory import check_bound, links, omega_neighbours


@pytest.mark.parametrize("start", [0.0, 12.0, 180.0, 348.0])
@pytest.mark.parametrize("iflip", [False, True])
@pytest.mark.parametrize("below", [False, True])
def test_interlaced_turn_recorded_modulo_360(start, iflip, below):
    """Two passes of 45 points, 8 degree steps, the second 4 degrees above or below
    the first, both crossing 360 -> 0. The turns added at the first pass's crossing
    were carried into the whole second pass, which then lay a turn above the first:
    no interlace was seen, the scan was linked by position within 50 points, and a
    spot at the start angle (at both ends of each pass) was split."""
    first = (start + 8.0 * np.arange(45)) % 360
    second = (first + (-4.0 if below else 4.0)) % 360
    omega = np.r_[first, second[::-1] if iflip else second]
    derived = derive_trajectory({"omega": omega})
    assert derived == {"kind": "interlaced", "fast": "omega", "iflip": iflip,
                       "offset": -0.5 if below else 0.5, "wrap": True}
    t = make_trajectory(derived, 90, ["omega"])
    assert links(t, 90) == {j: sorted((i, "omega") for i in want)
                            for j, want in omega_neighbours(omega, 360.0).items()}
    check_bound(t, 90, tight=True)


@pytest.mark.parametrize("snake", [False, True])
def test_rows_of_a_turn_recorded_modulo_360(snake):
    """Rows of 20 points of 18 degrees, each a turn from 54 degrees (a snake's every
    other row back from 36): each row's crossing added a turn to all the rows after it,
    so the rows lay a turn apart and were linked by position within +-261 points of
    fast index. The rows are compared at the same angles: a grid (snake) linking the
    same angle across rows."""
    row = (54.0 + 18.0 * np.arange(20)) % 360
    rows = [row[::-1] if snake and r % 2 else row for r in range(4)]
    omega, dty = np.concatenate(rows), np.repeat(np.arange(4.0), 20)
    derived = derive_trajectory({"omega": omega, "dty": dty})
    assert derived == {"kind": "snake" if snake else "grid", "fast": "omega", "slow": "dty",
                       "nfast": 20, "wrap": True}
    t = make_trajectory(derived, 80, ["omega", "dty"])
    for j in range(20, 80):
        across = [i for i, kind in t.links_before(j) if kind == "dty"]
        assert across == [j - 20 if not snake else j - 1 - 2 * (j % 20)] and (
            omega[across[0]] == omega[j]), j
    check_bound(t, 80, tight=True)


def test_a_turn_that_fits_nothing_is_searched_whole():
    """An interlaced turn whose second pass started late fits no regular scan: linked
    by position, the window now spans the whole scan (up to two turns' points), so the
    second pass's last point (8 degrees) links the first pass's first (12 degrees), 79
    points before it: the window of a turn and a bit (50 points) split that spot."""
    first = (12.0 + 8.0 * np.arange(45)) % 360
    omega = np.r_[first, ((first + 4.0) % 360)[10:]]
    derived = derive_trajectory({"omega": omega})
    assert derived["kind"] == "free" and derived["window"] == 79
    t = make_trajectory(derived, 80, ["omega"])
    for i in range(80):
        t.observe(i, {"omega": float(omega[i])})
    assert {0, 44} <= set(t.neighbours_before(79))
    check_bound(t, 80)
