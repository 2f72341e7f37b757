"""The linker's frontier: the labelled frames of points that a later point may still
link to (as runs of their labelled pixels), and their form in `Linker.state()`.

In the state the frames' arrays are concatenated, frame after frame, with a
pointer per kind of array (`FRONTIER_PARTS`) that cuts them into frames:
plain arrays that HDF5 and msgpack hold without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodes.kernels.overlap import overlap_pairs, pairs_within
from nodes.kernels.runs import RUN_COLUMNS

# the arrays a frame has none of (its intensities and peak pixels when the linker
# does not split)
NO_INT = np.empty(0, np.float32)
NO_KEY = np.empty(0, np.int64)
NO_H = np.empty(0, np.float64)
NO_RUNS = np.empty((0, RUN_COLUMNS), np.int32)


@dataclass
class FrontierFrame:
    """The labelled pixels of a point that may still be linked to."""

    point_id: int
    runs: np.ndarray  # int32 (nruns, RUN_COLUMNS): runs of labelled pixels (kernels.runs)
    peak_offset: int
    npx: np.ndarray  # int64 pixels per peak (index label - 1)
    s_raw: np.ndarray  # float64 centroids per peak, for centroid criteria
    f_raw: np.ndarray
    close_at: int = 0  # the step after which no point links to it
    # split only (else empty): float32 per labelled pixel (RUN_PX indexes it); per peak
    # its highest pixel's raster key and value (kernels.runs.frame_runs)
    intensity: np.ndarray = field(default_factory=lambda: NO_INT)
    peak_key: np.ndarray = field(default_factory=lambda: NO_KEY)
    peak_h: np.ndarray = field(default_factory=lambda: NO_H)


# the frontier's arrays in Linker.state(), by the pointer that cuts them into frames
FRONTIER_PARTS = {"run_ptr": ("runs",), "int_ptr": ("intensity",),
                  "peak_ptr": ("npx", "s_raw", "f_raw", "peak_key", "peak_h")}
FRONTIER_EMPTY = {"runs": NO_RUNS, "intensity": NO_INT, "npx": np.empty(0, np.int64),
                  "s_raw": NO_H, "f_raw": NO_H, "peak_key": NO_KEY, "peak_h": NO_H}


def frontier_state(frontier: dict[int, FrontierFrame]) -> dict[str, np.ndarray]:
    """The frames, in point order, as Linker.state()'s "frontier" dict."""
    frames = [frontier[p] for p in sorted(frontier)]
    state: dict[str, np.ndarray] = {
        "point_id": np.array([f.point_id for f in frames], np.int64),
        "peak_offset": np.array([f.peak_offset for f in frames], np.int64),
        "close_at": np.array([f.close_at for f in frames], np.int64)}
    for ptr, names in FRONTIER_PARTS.items():
        state[ptr] = np.cumsum([0, *(getattr(f, names[0]).shape[0] for f in frames)],
                               dtype=np.int64)
        for name in names:
            parts = [getattr(f, name) for f in frames]
            empty = FRONTIER_EMPTY[name]
            state[name] = (np.concatenate(parts).astype(empty.dtype, copy=False)
                           if parts else empty.copy())
    return state


def frontier_from(state: dict[str, Any], split: bool) -> dict[int, FrontierFrame]:
    """The frontier frames of Linker.state()'s "frontier" dict (copies)."""
    ints = {k: np.asarray(state[k], np.int64) for k in
            ("point_id", "peak_offset", "close_at", *FRONTIER_PARTS)}
    arrays = {k: np.asarray(state[k]).astype(e.dtype, copy=False)
              for k, e in FRONTIER_EMPTY.items()}
    n = ints["point_id"].shape[0]
    for k in ("peak_offset", "close_at"):
        if ints[k].shape != (n,):
            raise ValueError(f"linker state: frontier {k} has {ints[k].shape[0]} entries "
                             f"for {n} frames")
    used = {"run_ptr": ("runs",), "int_ptr": ("intensity",) if split else (),
            "peak_ptr": ("npx", "s_raw", "f_raw", *(("peak_key", "peak_h") if split else ()))}
    for ptr, names in used.items():
        p = ints[ptr]
        if p.shape != (n + 1,) or p[0] != 0 or (np.diff(p) < 0).any() or any(
                arrays[k].shape[0] != p[-1] or arrays[k].shape[1:] != FRONTIER_EMPTY[k].shape[1:]
                for k in names):
            raise ValueError(f"linker state: frontier {ptr} does not fit its arrays")
    out = {}
    for i, p in enumerate(ints["point_id"].tolist()):
        part = {}
        for ptr, names in used.items():
            s = slice(int(ints[ptr][i]), int(ints[ptr][i + 1]))
            part.update({k: arrays[k][s].copy() for k in names})
        out[p] = FrontierFrame(p, part["runs"], int(ints["peak_offset"][i]), part["npx"],
                               part["s_raw"], part["f_raw"], int(ints["close_at"][i]),
                               part.get("intensity", NO_INT), part.get("peak_key", NO_KEY),
                               part.get("peak_h", NO_H))
    return out


def joined_frames(olds: list[FrontierFrame]) -> tuple[np.ndarray, ...]:
    """The frames' arrays one after the other, with pointers, as link_frames takes them."""
    if len(olds) == 1:
        o = olds[0]
        return (o.runs, np.array([0, o.runs.shape[0]]), o.intensity,
                np.array([0, o.intensity.shape[0]]), o.peak_key, o.peak_h, o.npx, o.s_raw,
                o.f_raw, np.array([0, o.npx.shape[0]]), np.array([o.peak_offset]))
    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(o, name) for o in olds])

    def ptr(name: str) -> np.ndarray:
        return np.cumsum([0, *(getattr(o, name).shape[0] for o in olds)], dtype=np.int64)

    return (joined("runs"), ptr("runs"), joined("intensity"), ptr("intensity"),
            joined("peak_key"), joined("peak_h"), joined("npx"), joined("s_raw"),
            joined("f_raw"), ptr("npx"), np.array([o.peak_offset for o in olds], np.int64))


def plain(value: Any) -> Any:
    """A scalar read back from HDF5 or msgpack as a Python value (bytes as str)."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def distance_links(olds: list[FrontierFrame], runs: np.ndarray, npx: np.ndarray,
                   s_raw: np.ndarray, f_raw: np.ndarray, offset: int, width: int,
                   distance: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """For the distance criterion alone: the overlaps with the neighbours' frames
    (stored, not used) and the candidate links, the pairs of peaks whose centroids
    are within `distance` (for `Linker.union`)."""
    parts = []
    for old in olds:
        peak_a, peak_b, npixels, score, _, _, _ = overlap_pairs(
            old.runs, old.npx.shape[0], runs, NO_INT, NO_INT, NO_KEY, NO_H, NO_KEY,
            NO_H, width, False, old.peak_offset, offset, old.npx, npx)
        ia, ib = pairs_within(old.s_raw, old.f_raw, s_raw, f_raw, distance)
        cand = {"npixels": np.zeros(ia.shape[0], np.int32), "npx_a": old.npx[ia],
                "npx_b": npx[ib], "s_a": old.s_raw[ia], "f_a": old.f_raw[ia],
                "s_b": s_raw[ib], "f_b": f_raw[ib], "saddle": np.full(ia.shape[0], np.inf),
                "gid_a": old.peak_offset + ia, "gid_b": offset + ib}
        parts.append(({"peak_a": peak_a, "peak_b": peak_b, "npixels": npixels,
                       "score": score}, cand))
    overlaps = {k: np.concatenate([pt[k] for pt, _ in parts]) for k in parts[0][0]}
    return overlaps, {k: np.concatenate([c[k] for _, c in parts]) for k in parts[0][1]}
