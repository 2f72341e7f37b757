"""The linker's point-by-point kernel: a new frame against its neighbours' frames,
with the unions of the pairs kept (`link_frames`); the block path's is
`kernels.overlap.overlaps_block`."""

from __future__ import annotations

import numba
import numpy as np

from nodes.kernels.overlap import overlap_pairs
from nodes.kernels.unionfind import union_pairs


@numba.njit(nogil=True, cache=True)
def link_frames(old_runs, old_run_ptr, old_int, old_int_ptr, old_peak_key, old_peak_h,
                old_npx, old_s, old_f, old_peak_ptr, old_offset, runs, intensity, peak_key,
                peak_h, npx, s_raw, f_raw, offset, ncols, with_saddle, fraction, distance,
                gid, n, parent, close_at, size, next_member):
    """Overlap a new frame with its neighbours' frames and union the pairs kept.

    The old_* arrays hold the neighbours' frames one after the other (in the
    neighbour order; frame j's runs are old_run_ptr[j]..[j + 1], its
    intensities old_int_ptr[j].., its peaks old_peak_ptr[j].., the global id
    of its first peak old_offset[j]); the new frame's first peak is `offset`.
    A pair of overlapping peaks is kept if it shares at least `fraction` of
    the smaller blob (when fraction >= 0) and its centroids are within
    `distance` (when distance >= 0) (`nodes.criteria`); kept pairs are unioned
    in the linker's forest (gid[:n] and its slot arrays, `union_pairs`).
    Returns the overlaps of all frames, frame after frame and (a, b) order
    within one (`overlap_pairs`: peak_a, peak_b, npixels, score), and the kept
    links (gid_a, gid_b, saddle).
    """
    total = 0
    parts = []
    for j in range(old_offset.shape[0]):
        pp = slice(old_peak_ptr[j], old_peak_ptr[j + 1])
        part = overlap_pairs(old_runs[old_run_ptr[j]:old_run_ptr[j + 1]], old_npx[pp].shape[0],
                             runs, old_int[old_int_ptr[j]:old_int_ptr[j + 1]], intensity,
                             old_peak_key[pp] if with_saddle else old_peak_key,
                             old_peak_h[pp] if with_saddle else old_peak_h, peak_key, peak_h,
                             ncols, with_saddle, old_offset[j], offset, old_npx[pp], npx)
        total += part[0].shape[0]
        parts.append(part)
    peak_a = np.empty(total, np.int64)  # all the overlaps
    peak_b = np.empty_like(peak_a)
    npixels = np.empty(total, np.int32)
    score = np.empty(total, np.float32)
    keep_a = np.empty_like(peak_a)  # the pairs kept
    keep_b = np.empty_like(peak_a)
    keep_s = np.empty(total, np.float64)
    m = 0
    kept = 0
    d2 = distance * distance
    for j in range(len(parts)):
        pa, pb, nj, sc, sad, ia, ib = parts[j]
        for q in range(pa.shape[0]):
            peak_a[m] = pa[q]
            peak_b[m] = pb[q]
            npixels[m] = nj[q]
            score[m] = sc[q]
            m += 1
            ok = True
            a = old_peak_ptr[j] + ia[q]
            if fraction >= 0.0:
                smaller = np.float64(min(old_npx[a], npx[ib[q]]))
                ok = nj[q] > 0 and np.float64(nj[q]) >= fraction * smaller
            if distance >= 0.0:
                ds = old_s[a] - s_raw[ib[q]]
                df = old_f[a] - f_raw[ib[q]]
                ok = ok and ds * ds + df * df <= d2
            if ok:
                keep_a[kept] = pa[q]
                keep_b[kept] = pb[q]
                keep_s[kept] = sad[q]
                kept += 1
    live = gid[:n]
    union_pairs(parent, close_at, size, next_member, np.searchsorted(live, keep_a[:kept]),
                np.searchsorted(live, keep_b[:kept]))
    return peak_a, peak_b, npixels, score, keep_a[:kept], keep_b[:kept], keep_s[:kept]
