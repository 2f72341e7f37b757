"""Runs of labelled pixels: the linker's form of a labelled sparse frame.

A run is pixels next to each other on one row with one label, a row of
`runs` (int32) with the columns RUN_ROW, RUN_C0, RUN_C1 (first and last
column), RUN_LABEL and RUN_PX (the run's first pixel among the frame's
labelled pixels, where its intensities are). Spots are runs of several
pixels, so a merge of two frames' runs (`kernels.overlap.overlap_runs`) does
a tenth of the steps of a merge of their pixels and the linker's frontier
holds a fifth of the bytes. The label node finds them as it labels
(`kernels.components.label_kept`, split "none"); `frame_runs` finds them in
labelled pixels, `runs_npx` checks the label node's.
"""

from __future__ import annotations

import numba
import numpy as np

RUN_ROW, RUN_C0, RUN_C1, RUN_LABEL, RUN_PX = range(5)
RUN_COLUMNS = 5


@numba.njit(nogil=True, cache=True)
def frame_runs(row, col, label, intensity, pixel_ptr, npeaks, ncols):
    """The runs of the labelled pixels of frames k = 0.. (pixels pixel_ptr[k]..[k + 1],
    labels 1..npeaks[k]; pixels labelled <= 0 are skipped).

    Returns runs (nruns, RUN_COLUMNS) int32, frame after frame (frame k's are
    run_ptr[k]..[k + 1]); the pixels per peak of all frames (int64, frame k's
    peaks start at sum(npeaks[:k])); a status per frame (0 ok, 1 pixels not
    strictly raster-sorted, 2 a label above its npeaks). With intensities (not
    empty) also the labelled pixels' intensities (float32, frame after frame,
    frame k's start at int_ptr[k]) and per peak the raster key (row * ncols +
    col) and value (float64) of its highest pixel, the first in raster order
    among equals; else these three are empty. The pixel passes but the last
    have no branches (the compiler vectorises them).
    """
    nframes = npeaks.shape[0]
    n = row.shape[0]
    with_int = intensity.shape[0] > 0
    start = np.empty(n, np.bool_)  # a pixel that does not continue the run before it
    for i in range(1, n):
        start[i] = ((row[i] != row[i - 1]) | (np.int32(col[i]) != np.int32(col[i - 1]) + 1)
                    | (label[i] != label[i - 1]) | (label[i] <= 0))
    for k in range(nframes):
        if pixel_ptr[k + 1] > pixel_ptr[k]:
            start[pixel_ptr[k]] = True
    nruns = 0
    for i in range(n):
        nruns += start[i] & (label[i] > 0)
    runs = np.empty((nruns, RUN_COLUMNS), np.int32)
    run_ptr = np.zeros(nframes + 1, np.int64)
    int_ptr = np.zeros(nframes + 1, np.int64)
    peak_ptr = np.zeros(nframes + 1, np.int64)
    for k in range(nframes):
        peak_ptr[k + 1] = peak_ptr[k] + npeaks[k]
    npx = np.zeros(peak_ptr[nframes], np.int64)
    status = np.zeros(nframes, np.int8)
    kept = np.empty(n if with_int else 0, np.float32)
    npk = peak_ptr[nframes] if with_int else 0
    peak_key = np.full(npk, -1, np.int64)
    peak_h = np.full(npk, -np.inf)
    m = 0
    q = 0
    for k in range(nframes):
        s = pixel_ptr[k]
        e = pixel_ptr[k + 1]
        ordered = _unordered(row[s:e], col[s:e], ncols) == 0
        top = _top(label[s:e])
        if not ordered:
            status[k] = 1
        if top > npeaks[k]:
            status[k] = 2 if ordered else 1
        if status[k]:  # the caller raises
            run_ptr[k + 1] = m
            int_ptr[k + 1] = q
            continue
        base = peak_ptr[k] - 1
        q0 = q
        m0 = m
        cur = -1  # the labelled run open at pixel i, and its first pixel
        first = s
        for i in range(s, e):
            if start[i]:
                if cur >= 0:
                    length = i - first
                    runs[cur, RUN_C1] = runs[cur, RUN_C0] + length - 1
                    q += length
                    cur = -1
                if label[i] > 0:
                    runs[m, RUN_ROW] = row[i]
                    runs[m, RUN_C0] = col[i]
                    runs[m, RUN_LABEL] = label[i]
                    runs[m, RUN_PX] = q - q0
                    cur = m
                    first = i
                    m += 1
        if cur >= 0:
            runs[cur, RUN_C1] = runs[cur, RUN_C0] + (e - first) - 1
            q += e - first
        for r in range(m0, m):
            npx[base + runs[r, RUN_LABEL]] += runs[r, RUN_C1] - runs[r, RUN_C0] + 1
        run_ptr[k + 1] = m
        if with_int:
            q = q0
            for i in range(s, e):
                lab = label[i]
                if lab > 0:
                    v = intensity[i]
                    kept[q] = v
                    if np.float64(v) > peak_h[base + lab]:
                        peak_h[base + lab] = v
                        peak_key[base + lab] = np.int64(row[i]) * ncols + np.int64(col[i])
                    q += 1
        int_ptr[k + 1] = q if with_int else 0
    return runs[:m], run_ptr, npx, status, kept[:q], int_ptr, peak_key, peak_h


@numba.njit(nogil=True, cache=True)
def runs_npx(runs, npeaks):
    """Pixels per peak of a frame given as runs (`frame_runs`' form, from the label
    node), and a status: 0 ok, 1 runs not in raster order or overlapping, 2 a
    label outside 1..npeaks."""
    npx = np.zeros(npeaks, np.int64)
    status = 0
    for q in range(runs.shape[0]):
        lab = runs[q, RUN_LABEL]
        if lab < 1 or lab > npeaks:
            return npx, 2
        if runs[q, RUN_C1] < runs[q, RUN_C0] or q and (
                runs[q, RUN_ROW] < runs[q - 1, RUN_ROW] or runs[q, RUN_ROW]
                == runs[q - 1, RUN_ROW] and runs[q, RUN_C0] <= runs[q - 1, RUN_C1]):
            status = 1
        npx[lab - 1] += runs[q, RUN_C1] - runs[q, RUN_C0] + 1
    return npx, status


@numba.njit(nogil=True, cache=True)
def _unordered(row, col, ncols):
    """How many pixels do not come strictly after the one before in raster order."""
    bad = 0
    for i in range(1, row.shape[0]):
        bad += (np.int64(row[i]) * ncols + np.int64(col[i])
                <= np.int64(row[i - 1]) * ncols + np.int64(col[i - 1]))
    return bad


@numba.njit(nogil=True, cache=True)
def _top(label):
    top = np.int64(0)
    for i in range(label.shape[0]):
        top = max(top, np.int64(label[i]))
    return top
