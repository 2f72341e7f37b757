"""Checks of neighbour rules shared by the trajectory and derivation tests."""

from __future__ import annotations

import numpy as np


def links(traj, n: int) -> dict[int, list[tuple[int, str]]]:
    return {j: sorted(traj.links_before(j)) for j in range(n)}


def check_bound(traj, n: int, tight: bool = False) -> None:
    """Brute force: every i in neighbours_before(j) has last_neighbour(i) >= j (and, for
    index rules, the bound is the last such j)."""
    last = {i: i for i in range(n)}
    for j in range(n):
        for i in traj.neighbours_before(j):
            assert 0 <= i < j, (i, j)
            assert traj.last_neighbour(i) >= j, (i, j, traj.last_neighbour(i))
            last[i] = max(last[i], j)
    for i in range(n):
        assert i <= traj.last_neighbour(i) <= n - 1
        if tight:
            assert traj.last_neighbour(i) == last[i], (i, traj.last_neighbour(i), last[i])


def omega_neighbours(omega: np.ndarray, period: float | None = None) -> dict[int, set]:
    """The known answer: each point's earlier neighbours in omega order (the first and
    last in omega too if the motor is periodic)."""
    if period is not None:
        omega = np.mod(omega, period)
    order = [int(i) for i in np.argsort(omega, kind="stable")]
    pairs = list(zip(order, order[1:], strict=False))
    if period is not None:
        pairs.append((order[0], order[-1]))
    want: dict[int, set] = {j: set() for j in range(len(omega))}
    for a, b in pairs:
        want[max(a, b)].add(min(a, b))
    return want
