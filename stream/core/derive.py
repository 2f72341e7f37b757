"""Guess a scan's trajectory map from its recorded motor positions.

Used when a recorded file does not say how it was scanned. The positions are
in `point_id` order; NaN (a motor that was not read) is ignored. The result is
a start-message `trajectory` map (see `stream.trajectory`):

* one moving motor, monotone: a sweep; `wrap` when it spans a whole turn
  (the span plus one step is 360), several turns of a whole number of points:
  a wrapping sweep with `points_per_turn`, otherwise `free` with a period;
* one moving motor in equal passes: two passes offset by half a step are
  `interlaced` (`iflip` if the second runs backwards; `offset` +0.5 or -0.5 as
  the second lies half a step after or before the first, along the first's
  direction: a pass run downwards in omega, or a second pass half a step below
  the first, is -0.5); passes over the same
  positions are a `snake` (alternating) or a `grid` with no slow motor;
* two moving motors, one constant along rows of equal length: a `grid` or
  `snake` whose fast motor is the one that moves within the rows (either
  order), `wrap` when each row spans a turn;
* anything else: `free`, with tolerances from the steps; a `free` scan over a
  whole turn searches the whole scan for neighbours if it holds no more than
  two turns' points, else a turn and a bit around each point.

A motor read as NaN at some points is filled for the guess from its neighbours
on either side (both ways tried where they disagree: a NaN where a pass turns
round belongs to one pass or the other), and the guess that fits best (a
regular scan before one linked by position) is taken; so one unread position
at the start or end of a pass no longer turns an interlaced scan into a sweep
or a snake into a grid. A fast motor recorded modulo a turn (-180..180, or
0..360 jumping from 357 to 0) is unwrapped where the jump is one regular step,
the turns added carried either to the end (a sweep) or to the end of each pass
(interlaced passes, each then moved by whole turns to lie over the first:
passes that each cross 360 -> 0); the way that fits best is taken. Rows that
each span a turn are compared at the same angles.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TURN = 360.0  # degrees in a turn: the period of a wrapping fast motor


def derive_trajectory(motors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The trajectory map that fits the motor positions (see the module docstring)."""
    cols = {m: np.asarray(v, float) for m, v in motors.items()}
    moving = [m for m, v in cols.items()
              if np.isfinite(v).sum() > 1 and np.nanmax(v) > np.nanmin(v)]
    if not moving:
        return {"kind": "sweep", "fast": "omega" if "omega" in cols or not cols else min(cols)}
    # the fast motor moves between most consecutive points
    changes = {m: int(np.count_nonzero(np.abs(np.diff(cols[m])) > 0)) for m in moving}
    ordered = sorted(moving, key=lambda m: (-changes[m], m != "omega", m))
    guesses = [_derive(ordered, variant) for variant in _filled(cols, moving)]
    return min(guesses, key=_misfit)


def _misfit(guess: dict[str, Any]) -> int:
    """0 for a regular scan, 1 for one whose rows are linked by position, 2 for free."""
    return 2 if guess["kind"] == "free" else int("tolerance" in guess)


def _filled(cols: dict[str, np.ndarray], moving: list[str]) -> list[dict[str, np.ndarray]]:
    """The positions with each moving motor's NaN filled by continuing its neighbours'
    steps: from the left where both sides can, then from the right (one variant if
    the two agree or nothing is missing)."""
    if all(np.isfinite(cols[m]).all() for m in moving):
        return [cols]
    out = []
    for prefer_left in (True, False):
        variant = dict(cols)
        for m in moving:
            variant[m] = _fill(cols[m], prefer_left)
        out.append(variant)
    same = all(np.array_equal(out[0][m], out[1][m]) for m in moving)
    return out[:1] if same else out


def _fill(v: np.ndarray, prefer_left: bool) -> np.ndarray:
    """`v` with each run of NaN continued from the two finite values before it (or after
    it, or a single neighbour's value)."""
    v = v.copy()
    bad = ~np.isfinite(v)
    good = np.flatnonzero(~bad)
    for i in np.flatnonzero(bad):
        before, after = good[good < i], good[good > i]
        left = (v[before[-1]] + (i - before[-1]) * (v[before[-1]] - v[before[-2]])
                if before.size > 1 else v[before[-1]] if before.size else None)
        right = (v[after[0]] - (after[0] - i) * (v[after[1]] - v[after[0]])
                 if after.size > 1 else v[after[0]] if after.size else None)
        v[i] = left if left is not None and (prefer_left or right is None) else right
    return v


def _unwrappings(v: np.ndarray) -> list[np.ndarray]:
    """`v` with its jumps of about a turn that are, less the turn, one regular step
    taken out (a motor recorded modulo 360); other jumps (an interlaced scan's pass
    break) are left alone. Two ways where they differ: the turns taken out carried on
    to the end (one sweep, even with irregular steps), and carried on only to the end
    of each pass (a run of regular steps), each pass then moved by whole turns to lie
    over the first (interlaced passes, or rows that each cover a turn, that start at
    another angle than 0 and cross 360 -> 0)."""
    d = np.diff(v)
    jumps = np.flatnonzero(np.abs(d) > TURN / 2)
    if not jumps.size:
        return [v]
    step = _step(np.delete(v, jumps + 1))
    wraps = np.zeros(d.shape[0])
    for j in jumps:
        rest = d[j] - math.copysign(TURN, d[j])
        if abs(abs(rest) - step) <= 0.1 * step:
            wraps[j] = -math.copysign(TURN, d[j])
    whole = v + np.r_[0.0, np.cumsum(wraps)]
    regular = np.abs(np.abs(d + wraps) - step) <= 0.25 * step
    passes = np.split(np.arange(v.shape[0]), np.flatnonzero(~regular) + 1)
    each = v.copy()
    for p in passes:
        each[p] = v[p] + np.r_[0.0, np.cumsum(wraps[p[:-1]])]
    ref = float(np.nanmedian(each[passes[0]]))
    for p in passes[1:]:
        mid = np.nanmedian(each[p])
        if np.isfinite(mid):
            each[p] -= TURN * round((mid - ref) / TURN)
    return [whole] if np.array_equal(whole, each, equal_nan=True) else [whole, each]


def _derive(ordered: list[str], cols: dict[str, np.ndarray]) -> dict[str, Any]:
    fast = ordered[0]
    return min((_derive_unwrapped(ordered, {**cols, fast: v})
                for v in _unwrappings(cols[fast])), key=_misfit)


def _derive_unwrapped(ordered: list[str], cols: dict[str, np.ndarray]) -> dict[str, Any]:
    fast = ordered[0]
    moving = ordered
    if len(moving) == 1:
        return _one_motor(fast, cols[fast])
    if len(moving) == 2:
        raster = _raster(fast, ordered[1], cols[fast], cols[ordered[1]])
        if raster is not None:
            return raster
    return _free(fast, ordered[1:], cols)


def _step(v: np.ndarray) -> float:
    d = np.abs(np.diff(v))
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if d.size else 1.0


def _turns(span: float, step: float) -> bool:
    return abs(span + step - TURN) <= 0.5 * step


def _passes(v: np.ndarray, step: float) -> int | None:
    """Length of the first pass: points up to the first step that is not a regular
    step in the first direction, or None if the motor moves regularly throughout."""
    d = np.diff(v)
    if not np.isfinite(d).any():
        return None
    sign = np.sign(d[np.isfinite(d)][0])
    for j, x in enumerate(d):
        if math.isfinite(x) and (np.sign(x) != sign or abs(abs(x) - step) > 0.25 * step):
            return j + 1
    return None


def _one_motor(fast: str, v: np.ndarray) -> dict[str, Any]:
    n, step = len(v), _step(v)
    first = _passes(v, step)
    if first is None:
        span = float(np.nanmax(v) - np.nanmin(v))
        if _turns(span, step):
            return {"kind": "sweep", "fast": fast, "wrap": True, "points_per_turn": n}
        per_turn = TURN / step
        whole = span + step >= TURN - 0.5 * step  # at least a turn
        if whole and abs(per_turn - round(per_turn)) < 1e-3 * per_turn:
            return {"kind": "sweep", "fast": fast, "wrap": True,
                    "points_per_turn": int(round(per_turn))}
        if whole:
            return {"kind": "free", "tolerance": {fast: 1.5 * step}, "period": {fast: TURN},
                    "window": int(math.ceil(per_turn)) + 2}
        return {"kind": "sweep", "fast": fast}
    if n % first == 0 and n // first >= 2:
        rows = v.reshape(n // first, first)
        if all(_passes(r, step) is None for r in rows):
            spans = np.sign(rows[:, -1] - rows[:, 0])
            ref = np.sort(rows[0])
            same = [np.nanmax(np.abs(np.sort(r) - ref)) <= 0.1 * step for r in rows]
            offset = _half_offset(rows, step) if n // first == 2 else None
            if offset is not None:  # wrap: both passes together cover a turn in half steps
                out = {"kind": "interlaced", "fast": fast, "iflip": bool(spans[1] != spans[0]),
                       "offset": offset}
                return {**out, "wrap": True} if _turns(float(np.ptp(v)), 0.5 * step) else out
            if all(same):
                alternate = bool(np.all(spans[1:] == -spans[:-1]))
                wrap = _turns(float(np.ptp(rows[0])), step)
                out = {"kind": "snake" if alternate else "grid", "fast": fast, "nfast": first,
                       "slow": None}
                return {**out, "wrap": True} if wrap else out
    return _free(fast, [], {fast: v})


def _half_offset(rows: np.ndarray, step: float) -> float | None:
    """Where the second of two passes lies, in steps along the direction the first
    runs (the `offset` of an interlaced map): +0.5 or -0.5, or None if its positions
    are not all half a step above (or all below) the first pass's."""
    gap = np.sort(rows[1]) - np.sort(rows[0])
    along = float(np.sign(rows[0, -1] - rows[0, 0]))
    for above in (1.0, -1.0):
        if np.nanmax(np.abs(gap - above * 0.5 * step)) <= 0.1 * step:
            return 0.5 * above * along
    return None


def _raster(fast: str, slow: str, v: np.ndarray, s: np.ndarray) -> dict[str, Any] | None:
    n = len(v)
    moves = np.flatnonzero(np.abs(np.diff(s)) > 0) + 1
    if moves.size == 0:
        return None
    nfast = int(moves[0])
    if nfast < 2 or n % nfast or not np.array_equal(moves, np.arange(nfast, n, nfast)):
        return None
    step = _step(v)
    rows = v.reshape(n // nfast, nfast)
    if not all(_passes(r, step) is None for r in rows):
        return None
    spans = np.sign(rows[:, -1] - rows[:, 0])
    alternate = bool(rows.shape[0] > 1 and np.all(spans[1:] == -spans[:-1]))
    out: dict[str, Any] = {"kind": "snake" if alternate else "grid", "fast": fast, "slow": slow,
                           "nfast": nfast}
    if _turns(float(np.nanmax(rows[0]) - np.nanmin(rows[0])), step):
        out["wrap"] = True
        # each row a turn: compare the rows at the same angles (rows recorded modulo
        # 360 that cross 0 come out of the unwrapping a turn apart)
        mid = np.nanmedian(rows, axis=1)
        rows = rows - TURN * np.round((mid - mid[0]) / TURN)[:, None]
    ref = np.sort(rows[0])
    misfit = max(float(np.nanmax(np.abs(np.sort(r) - ref))) for r in rows)
    if misfit > 0.1 * step:  # rows do not repeat the same positions: link by position
        out["tolerance"] = 1.5 * step
        out["shift"] = 1 + int(math.ceil(misfit / step))
    return out


def _free(fast: str, others: list[str], cols: dict[str, np.ndarray]) -> dict[str, Any]:
    v = cols[fast]
    n, step = len(v), _step(v)
    tol = {fast: 1.5 * step}
    out: dict[str, Any] = {"kind": "free", "tolerance": tol}
    span = float(np.nanmax(v) - np.nanmin(v))
    per_turn = TURN / step
    window = n - 1
    if span + step >= TURN - 0.5 * step:
        out["period"] = {fast: TURN}
        turn = int(math.ceil(1.05 * per_turn)) + 2
        # up to two turns' points, the whole scan: a scan that fits nothing regular
        # may hold one angle at its two ends (interlaced passes cut short, ...)
        window = turn if n - 1 > 2 * turn else n - 1
    lag = min(int(round(per_turn)), n - 1) if "period" in out else 1
    for m in others:
        x = cols[m]
        near = np.abs(x[lag:] - x[:-lag]) if lag < n else np.zeros(1)
        near = near[np.isfinite(near)]
        tol[m] = 1.5 * float(max(near.max(initial=0.0), np.nanmax(np.abs(np.diff(x)))))
    out["window"] = max(window, 1)
    return out
