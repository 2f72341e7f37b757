"""Scan kinds of the simulator: motor tables, trajectory maps and spot placement.

Every kind is a table of true motor positions per point (`omega` in degrees,
the omega `width` a frame integrates, `dty`), the start message's motors and
trajectory map, and the ranges spots are placed in:

* sweep: omega = omega_start + omega_step * i; `wrap`: whole turns of
  360 / |omega_step| points (one or several);
* interlaced: two passes of npoints / 2, the second offset by half a step
  (reversed if `iflip`);
* grid / snake: `nrows` rows of npoints / nrows points, row-major; `fast` is
  "omega" (an omega sweep per dty row, dty = dty_start + dty_step * row; with
  dty_step 0 the passes are at one dty and only omega is announced) or "dty"
  (a dty scan per omega step); a snake's odd rows run backwards; `wrap` (fast
  omega) makes every row a turn;
* free: continuous rotation over several turns with sinusoidal dty, dty =
  dty_start + dty_amplitude * sin(2 pi (omega - omega_start) / dty_period).

Spots have a centre in omega (degrees, on the circle for scans that wrap) and,
for 2D scans, in dty. Their omega centres are spread evenly over the range,
so every frame away from the ends sees spots; each site then takes a pixel
cell that no site near it in omega (and dty) holds, which keeps isolated
spots at least 2 ISOLATION + PAIR_SEPARATION sigmas apart along some axis.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stream.sources.simulate.config import SimConfig

KINDS = ("sweep", "interlaced", "grid", "snake", "free")
TURN = 360.0
BOX = 5.0                 # spots are rendered within +-BOX sigma
ISOLATION = 4.0           # normalised distance (sigma_i + sigma_j units) below which spots touch
PAIR_SEPARATION = (2.0, 3.5)  # touching pairs, in units of the pair's mean sigma
MARGIN = 4.0              # sigmas between a spot centre and the end of the omega range
DTY_MARGIN = 2.0          # the same in dty, where rows are few (a 2 sigma cut moves the
                          # centroid by 0.05 sigma)


@dataclass(frozen=True)
class Layout:
    """Where a simulated scan goes: positions per point, what the start message says."""

    omega: np.ndarray         # true omega (degrees) per point
    width: np.ndarray         # omega range integrated by each frame (degrees)
    dty: np.ndarray           # true dty per point
    motors: list[str]         # announced motors
    trajectory: dict[str, Any]
    omega_range: tuple[float, float]  # where spot centres may lie (spots stay inside)
    circle: bool              # omega wraps: centres anywhere on [omega_start, + 360)
    dty_range: tuple[float, float] | None  # None: a 1D scan, spots have no dty centre


def layout(c: SimConfig) -> Layout:
    """The motor table and trajectory of the configured scan kind."""
    n, w0, step = c.npoints, c.omega_start, c.omega_step
    i = np.arange(n, dtype=float)
    width = np.full(n, abs(step))
    dty = np.full(n, float(c.dty_start))
    motors, circle, dty_range = ["omega"], False, None
    if c.trajectory == "sweep":
        omega = w0 + step * i
        traj: dict[str, Any] = {"kind": "sweep", "fast": "omega"}
        if c.wrap:
            traj.update(wrap=True, points_per_turn=points_per_turn(c))
            circle = True
    elif c.trajectory == "interlaced":
        m = n // 2
        k = np.arange(m, dtype=float)
        omega = np.concatenate([w0 + step * k, w0 + step * ((k[::-1] if c.iflip else k) + 0.5)])
        traj = {"kind": "interlaced", "fast": "omega", "iflip": c.iflip}
    elif c.trajectory in ("grid", "snake"):
        nfast = n // c.nrows
        row, t = np.divmod(np.arange(n), nfast)
        f = np.where((row % 2 == 1) & (c.trajectory == "snake"), nfast - 1 - t, t)
        fast_i, slow_i = f.astype(float), row.astype(float)
        if c.fast == "omega":
            omega, dty = w0 + step * fast_i, c.dty_start + c.dty_step * slow_i
        else:
            omega, dty = w0 + step * slow_i, c.dty_start + c.dty_step * fast_i
        two_d = c.fast == "dty" or c.dty_step != 0
        traj = {"kind": c.trajectory, "fast": c.fast, "nfast": nfast,
                "slow": ("omega" if c.fast == "dty" else "dty") if two_d else None}
        if two_d:
            motors = ["omega", "dty"]
            dty_range = (float(dty.min()), float(dty.max()))
        if c.wrap:
            traj["wrap"] = True
            circle = True
    else:  # free
        omega = w0 + step * i
        dty = c.dty_start + c.dty_amplitude * np.sin(2 * np.pi * (omega - w0) / c.dty_period)
        motors = ["omega", "dty"]
        circle = n * abs(step) >= TURN
        dty_range = (float(dty.min()), float(dty.max())) if c.dty_amplitude else None
        traj = _free_map(omega, dty, abs(step), circle)
    lo, hi = float(np.min(omega)), float(np.max(omega))
    if circle:
        lo, hi = w0, w0 + TURN
    return Layout(omega, width, dty, motors, traj, (lo, hi), circle, dty_range)


def points_per_turn(c: SimConfig) -> int:
    return int(round(TURN / abs(c.omega_step)))


def _free_map(omega: np.ndarray, dty: np.ndarray, step: float, circle: bool) -> dict[str, Any]:
    """Tolerances that link each point to the one before and to the previous turn."""
    per_turn = TURN / step
    lag = min(int(round(per_turn)), len(omega) - 1)
    turn_gap = np.abs(dty[lag:] - dty[:-lag]).max(initial=0.0) if circle and lag > 0 else 0.0
    along = np.abs(np.diff(dty)).max(initial=0.0)
    traj: dict[str, Any] = {"kind": "free",
                            "tolerance": {"omega": 1.5 * step,
                                          "dty": 1.5 * float(max(turn_gap, along)) or 1.0}}
    if circle:
        traj["period"] = {"omega": TURN}
        traj["window"] = int(math.ceil(per_turn)) + 2
    return traj


# ------------------------------------------------------------------ spots


def _axis_cells(lo: float, hi: float, core: float, band: tuple[int, int], margin: float):
    """Cell centres and jitter along one axis: site centres lie in [lo, hi], at least
    `core` apart, and `margin` away from the pixel band [first, last) if any."""
    span = hi - lo + core
    n = int(span // core) if span >= core else 0
    if n == 0:
        return np.zeros(0), 0.0
    pitch = span / n
    centres = lo - core / 2 + pitch * (np.arange(n) + 0.5)
    jitter = (pitch - core) / 2
    if band[1] > band[0]:
        ok = ((centres + jitter + margin <= band[0] - 0.5)
              | (centres - jitter - margin >= band[1] - 0.5))
        centres = centres[ok]
    return centres, jitter


def omega_distance(a: np.ndarray, b: np.ndarray, circle: bool) -> np.ndarray:
    """a - b in degrees, folded into [-180, 180) on the circle."""
    d = np.asarray(a, float) - np.asarray(b, float)
    return np.mod(d + TURN / 2, TURN) - TURN / 2 if circle else d


def pair_half(c: SimConfig) -> float:
    """How far (in sigmas) a spot of a touching pair lies from its site; 0 without pairs."""
    npairs = min(int(round(c.spots * c.touching_fraction / 2)), c.spots // 2)
    return PAIR_SEPARATION[1] / 2 if npairs else 0.0


def grid_size(c: SimConfig) -> tuple[int, int]:
    """(rows, points a row) of the smallest grid / snake whose omega and dty spans hold
    c's spots (their margins, `place_spots`), each with one point to spare: the rows a
    grid needs and the points its rows need when the user gives neither."""
    half = pair_half(c)
    omega = int(np.ceil(2 * (MARGIN + half) * c.sigma_points[1])) + 2
    dty = (int(np.ceil(2 * (DTY_MARGIN + half) * c.sigma_dty[1] / abs(c.dty_step))) + 2
           if c.dty_step else 1)
    return (dty, omega) if c.fast == "omega" else (omega, dty)


def _narrow_dty(c: SimConfig, dty_range: tuple[float, float], need: float, sy: float) -> str:
    """Why no spot fits in dty, and the three ways out: a wider dty span (more rows), spots
    narrower in dty (the widest these rows hold: DTY_MARGIN sigmas inside each end, plus
    a touching pair's displacement), or no touching pairs (which need that displacement
    room in dty too, the 14 rows of the default grid where 8 hold single spots)."""
    span = dty_range[1] - dty_range[0]
    what = f"cannot place spots: the scan's dty spans {span:g}, spots of sigma_dty up to " \
           f"{sy:g} need more than {need:g}"
    widest = math.floor(100 * span / (2 * (DTY_MARGIN + pair_half(c)))) / 100
    lo = math.floor(100 * widest * c.sigma_dty[0] / c.sigma_dty[1]) / 100  # the same spread
    narrower = (f"spots narrower in dty (--sigma-dty LO HI with HI at most {widest:g}, e.g. "
                f"--sigma-dty {lo:g} {widest:g})" if lo > 0 else "")
    alone = dataclasses.replace(c, touching_fraction=0.0)
    if c.trajectory in ("grid", "snake") and c.dty_step:
        if c.fast == "dty":
            more = "more points a row"
        else:
            more = f"more rows (--rows {grid_size(c)[0]} or more, with npoints a multiple)"
            if pair_half(c):
                more += f", no touching pairs (--touching 0: --rows {grid_size(alone)[0]})"
    else:
        more = "a larger dty amplitude"
    return f"{what}: give {more}{' or ' if narrower else ''}{narrower}"


def place_spots(c: SimConfig, lay: Layout, gap_rows, gap_cols, rng) -> dict[str, np.ndarray]:
    """Truth table of the spots: centres, widths, amplitudes, partners, isolation."""
    n = c.spots
    npairs = min(int(round(n * c.touching_fraction / 2)), n // 2)
    nsites = n - npairs
    two_d = lay.dty_range is not None
    half = pair_half(c)  # a pair lies within +-half sigma of its site
    core = 2 * ISOLATION + 2 * half        # pixel cells this many largest sigmas apart
    spx, sw = c.sigma_px[1], c.sigma_points[1] * abs(c.omega_step)
    sy = c.sigma_dty[1]
    edge = (BOX + half) * spx + 1.0        # from the frame edges and the gap bands
    cells_s = _axis_cells(edge, c.shape[0] - 1 - edge, core * spx, gap_rows, edge)
    cells_f = _axis_cells(edge, c.shape[1] - 1 - edge, core * spx, gap_cols, edge)
    ncells = len(cells_s[0]) * len(cells_f[0])
    sig = np.stack([rng.uniform(*c.sigma_px, n), rng.uniform(*c.sigma_px, n),
                    rng.uniform(*c.sigma_points, n) * abs(c.omega_step),
                    rng.uniform(*c.sigma_dty, n)], axis=1)
    # a site's sigma covers both spots of a pair (spots 0..nsites-1 sit on their sites;
    # pair p is spots (p, nsites + p)); sites i, j in one pixel cell must be
    # ISOLATION (S_i + S_j) plus the pairs' displacement (half S) apart in omega or dty
    site_sig = sig[:nsites].copy()
    site_sig[:npairs] = np.maximum(sig[:npairs], sig[nsites:])
    reach = np.where(np.arange(nsites) < npairs, ISOLATION + half, ISOLATION)[:, None] * site_sig
    lo, hi = lay.omega_range
    if not lay.circle:
        lo, hi = lo + (MARGIN + half) * sw, hi - (MARGIN + half) * sw
        if hi < lo and nsites:  # the points (of a row) span too little omega
            span = (lay.omega_range[1] - lay.omega_range[0]) / abs(c.omega_step)
            raise ValueError(f"cannot place spots: {span:.0f} steps of omega"
                             f"{' a row' if two_d else ''} are too few for spots of "
                             f"sigma_points up to {c.sigma_points[1]:g} (more than "
                             f"{2 * (MARGIN + half) * c.sigma_points[1]:.0f} are needed): give "
                             f"more points{' a row (--points / --rows)' if two_d else ''}")
    site_y = np.zeros(nsites)
    if two_d:
        ylo, yhi = lay.dty_range
        ylo, yhi = ylo + (DTY_MARGIN + half) * sy, yhi - (DTY_MARGIN + half) * sy
        if yhi < ylo and nsites:
            raise ValueError(_narrow_dty(c, lay.dty_range, 2 * (DTY_MARGIN + half) * sy, sy))
        site_y = rng.uniform(ylo, yhi, nsites) if yhi >= ylo else np.full(nsites, np.nan)
    target = lo + (hi - lo) * (np.arange(nsites) + rng.uniform(0, 1, nsites)) / max(nsites, 1)
    placed = None
    if hi >= lo and np.isfinite(site_y).all():
        placed = _assign_cells(target, site_y, reach[:, 2], reach[:, 3] if two_d else None,
                               ncells, (lo, hi), lay.circle, rng)
    if nsites and placed is None:
        raise ValueError(f"cannot place {n} spots ({nsites} sites) in shape {c.shape} x "
                         f"{c.npoints} points ({c.trajectory}): room for {ncells} pixel cells "
                         f"with sigma_px up to {spx}, sigma_points up to {c.sigma_points[1]}"
                         f"{f' and sigma_dty up to {sy}' if two_d else ''}; use fewer spots, "
                         f"smaller sigmas, a larger frame or more points")
    cell, site_w = placed if nsites else (np.zeros(0, int), np.zeros(0))
    cs, cf = np.unravel_index(cell, (len(cells_s[0]), len(cells_f[0])))
    site = np.stack([cells_s[0][cs] + rng.uniform(-cells_s[1], cells_s[1], nsites),
                     cells_f[0][cf] + rng.uniform(-cells_f[1], cells_f[1], nsites),
                     site_w, site_y], axis=1)
    amp = np.exp(rng.uniform(*np.log(c.amplitude), n))
    # spots 0..nsites-1 sit on their sites; pair p is spots (p, nsites + p)
    a, b = np.arange(npairs), nsites + np.arange(npairs)
    u = rng.standard_normal((npairs, 4))
    if not two_d:
        u[:, 3] = 0.0
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    offset = rng.uniform(*PAIR_SEPARATION, (npairs, 1)) * u * (sig[a] + sig[b]) / 2
    pos = np.concatenate([site, site[:npairs] + offset / 2])
    pos[a] -= offset / 2
    if lay.circle:
        pos[:, 2] = np.mod(pos[:, 2] - lay.omega_range[0], TURN) + lay.omega_range[0]
    partner = np.full(n, -1)
    partner[a], partner[b] = b, a
    order = np.argsort(pos[:, 2], kind="stable")
    rank = np.empty(n, int)
    rank[order] = np.arange(n)
    partner = np.where(partner >= 0, rank[np.maximum(partner, 0)], -1)[order]
    pos, sig, amp = pos[order], sig[order], amp[order]
    if not two_d:
        pos[:, 3], sig[:, 3] = c.dty_start, 0.0
    step = abs(c.omega_step)
    truth = {"spot_id": np.arange(n), "s": pos[:, 0], "f": pos[:, 1],
             "point": (pos[:, 2] - c.omega_start) / c.omega_step, "omega": pos[:, 2],
             "dty": pos[:, 3], "sigma_s": sig[:, 0], "sigma_f": sig[:, 1],
             "sigma_w": sig[:, 2] / step, "sigma_omega": sig[:, 2], "sigma_dty": sig[:, 3],
             "amplitude": amp,  # peak counts per frame: omega widths in steps
             "total": amp * (2 * np.pi) ** 1.5 * sig[:, 0] * sig[:, 1] * sig[:, 2] / step,
             "partner": partner}
    truth["nearest"] = nearest(pos, sig, lay.circle, two_d)
    truth["touching"] = truth["nearest"] < ISOLATION
    truth["clean"] = ~truth["touching"]
    return truth


def _assign_cells(target, site_y, reach_w, reach_y, ncells: int, bounds: tuple[float, float],
                  circle: bool, rng) -> tuple[np.ndarray, np.ndarray] | None:
    """A pixel cell and an omega per site, in order of the (evenly spread) targets.

    Sites i, j in one cell must be reach_i + reach_j apart in omega (or in dty, for
    2D). A site takes a random cell free at its target; if none is, the cell it can
    have soonest, pushed forward in omega. None if a site is pushed past the range.
    """
    nsites = len(target)
    if ncells == 0 and nsites:  # the frame is too small for one spot cell
        return None
    cell = np.full(nsites, -1)
    omega = np.array(target, float)
    for k in range(nsites):
        clash = np.ones(k, bool) if reach_y is None else (
            np.abs(site_y[:k] - site_y[k]) < reach_y[:k] + reach_y[k])
        need = reach_w[:k] + reach_w[k]
        soonest = np.full(ncells, math.inf)
        for cc in range(ncells):
            mine = np.flatnonzero(clash & (cell[:k] == cc))
            w = float(target[k])
            for _ in range(len(mine) + 1):  # push past each blocking site in turn
                blocked = mine[np.abs(omega_distance(omega[mine], w, circle)) < need[mine]]
                if blocked.size == 0:
                    soonest[cc] = w
                    break
                w = float(np.max(omega[blocked] + need[blocked]))
        best = np.flatnonzero(soonest == soonest.min())
        pick = int(rng.choice(best))
        w = soonest[pick]
        if not math.isfinite(w) or w > (target[k] + TURN / 2 if circle else bounds[1]):
            return None
        cell[k], omega[k] = pick, w
    if circle:
        omega = np.mod(omega - bounds[0], TURN) + bounds[0]
    return cell, omega


def nearest(pos: np.ndarray, sig: np.ndarray, circle: bool, two_d: bool,
            block: int = 1024) -> np.ndarray:
    """Per spot, the smallest normalised distance sqrt(sum((dx / (sig_i + sig_j))^2)) to
    another spot over the axes s, f, omega (on the circle if it wraps) and dty (2D)."""
    n = len(pos)
    out = np.empty(n)
    axes = 4 if two_d else 3
    for lo in range(0, n, block):
        rows = slice(lo, min(lo + block, n))
        d2 = np.zeros((rows.stop - lo, n))
        for axis in range(axes):
            dx = pos[rows, None, axis] - pos[None, :, axis]
            if axis == 2:
                dx = omega_distance(dx, 0.0, circle)
            d2 += (dx / (sig[rows, None, axis] + sig[None, :, axis])) ** 2
        d2[np.arange(rows.stop - lo), np.arange(lo, rows.stop)] = np.inf
        out[rows] = np.sqrt(d2.min(axis=1))
    return out


def inside_scan(truth: dict[str, np.ndarray], lay: Layout) -> np.ndarray:
    """Spots whose omega (unless it wraps) and dty lie MARGIN (DTY_MARGIN) sigmas inside
    the scanned range."""
    ok = np.ones(len(truth["s"]), bool)
    if not lay.circle:
        lo, hi = lay.omega_range
        ok &= (truth["omega"] - MARGIN * truth["sigma_omega"] >= lo - 1e-9)
        ok &= (truth["omega"] + MARGIN * truth["sigma_omega"] <= hi + 1e-9)
    if lay.dty_range is not None:
        lo, hi = lay.dty_range
        ok &= (truth["dty"] - DTY_MARGIN * truth["sigma_dty"] >= lo - 1e-9)
        ok &= (truth["dty"] + DTY_MARGIN * truth["sigma_dty"] <= hi + 1e-9)
    return ok
