"""Raw moments of labelled sparse pixels: one pass, one row per 2D peak.

The output arrays are the columns of stream.item.PEAK_COLUMNS, allocated by
the caller with one entry per peak (row k is label k + 1). Sums accumulate in
float64, with s = row and f = col: per run of consecutive pixels with one label,
a partial sum from 0, then the runs added into the peak in turn (the order
fixes the last bits; tests/test_kernels_moments.py pins it).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def peak_moments(row, col, intensity, label,
                 npx, sum_intensity, s_raw, f_raw, s_1, s_I, s_sI, s_fI, s_ssI, s_ffI, s_sfI,
                 bb_s0, bb_s1, bb_f0, bb_f1, max_intensity):
    """Fill the peak table columns from the pixels (labels 1..npeaks)."""
    npeaks = npx.size
    for k in range(npeaks):
        npx[k] = 0
        s_I[k] = 0.0
        s_sI[k] = 0.0
        s_fI[k] = 0.0
        s_ssI[k] = 0.0
        s_ffI[k] = 0.0
        s_sfI[k] = 0.0
        bb_s0[k] = 2147483647
        bb_s1[k] = -1
        bb_f0[k] = 2147483647
        bb_f1[k] = -1
        max_intensity[k] = -np.inf
    n = row.size
    i = 0
    while i < n:  # one run of consecutive pixels with the same label at a time
        lab = label[i]
        k = lab - 1
        count = 0
        sum_i = sum_si = sum_fi = sum_ssi = sum_ffi = sum_sfi = 0.0
        r0 = r1 = np.int32(row[i])
        c0 = c1 = np.int32(col[i])
        top = intensity[i]
        end = i + 1  # the end of the run, found first: a tighter loop below
        while end < n and label[end] == lab:
            end += 1
        while i < end:
            s = np.float64(row[i])
            f = np.float64(col[i])
            signal = np.float64(intensity[i])
            s_signal = s * signal
            f_signal = f * signal
            count += 1
            sum_i += signal
            sum_si += s_signal
            sum_fi += f_signal
            sum_ssi += s * s_signal
            sum_ffi += f * f_signal
            sum_sfi += s * f_signal
            r1 = np.int32(row[i])  # raster order: the last row of a run is its largest
            c = np.int32(col[i])
            c0 = min(c0, c)
            c1 = max(c1, c)
            top = max(top, intensity[i])
            i += 1
        npx[k] += count
        s_I[k] += sum_i
        s_sI[k] += sum_si
        s_fI[k] += sum_fi
        s_ssI[k] += sum_ssi
        s_ffI[k] += sum_ffi
        s_sfI[k] += sum_sfi
        bb_s0[k] = min(bb_s0[k], r0)
        bb_s1[k] = max(bb_s1[k], r1)
        bb_f0[k] = min(bb_f0[k], c0)
        bb_f1[k] = max(bb_f1[k], c1)
        max_intensity[k] = max(max_intensity[k], top)
    for k in range(npeaks):
        s_1[k] = npx[k]
        sum_intensity[k] = s_I[k]
        if s_I[k] != 0.0:
            s_raw[k] = s_sI[k] / s_I[k]
            f_raw[k] = s_fI[k] / s_I[k]
        else:
            s_raw[k] = np.nan
            f_raw[k] = np.nan


@numba.njit(nogil=True, cache=True)
def peak_moments_runs(runs, intensity,
                      npx, sum_intensity, s_raw, f_raw, s_1, s_I, s_sI, s_fI, s_ssI, s_ffI,
                      s_sfI, bb_s0, bb_s1, bb_f0, bb_f1, max_intensity):
    """`peak_moments` from the frame's runs (the label node's, `kernels.runs.frame_runs`'
    form, every pixel in a run): the same sums in the same order, bit for bit, reading
    only the intensities (a run's row and columns are known)."""
    npeaks = npx.size
    for k in range(npeaks):
        npx[k] = 0
        s_I[k] = 0.0
        s_sI[k] = 0.0
        s_fI[k] = 0.0
        s_ssI[k] = 0.0
        s_ffI[k] = 0.0
        s_sfI[k] = 0.0
        bb_s0[k] = 2147483647
        bb_s1[k] = -1
        bb_f0[k] = 2147483647
        bb_f1[k] = -1
        max_intensity[k] = -np.inf
    nr = runs.shape[0]
    q = 0
    while q < nr:  # runs with one label one after the other: one run of pixels
        lab = runs[q, 3]
        k = lab - 1
        count = 0
        sum_i = sum_si = sum_fi = sum_ssi = sum_ffi = sum_sfi = 0.0
        r0 = r1 = runs[q, 0]
        c0 = runs[q, 1]
        c1 = runs[q, 2]
        top = intensity[runs[q, 4]]
        while q < nr and runs[q, 3] == lab:
            s = np.float64(runs[q, 0])
            first = runs[q, 1]
            px = runs[q, 4] - first
            r1 = runs[q, 0]
            c0 = min(c0, first)
            c1 = max(c1, runs[q, 2])
            for c in range(first, runs[q, 2] + 1):
                f = np.float64(c)
                signal = np.float64(intensity[px + c])
                s_signal = s * signal
                f_signal = f * signal
                sum_i += signal
                sum_si += s_signal
                sum_fi += f_signal
                sum_ssi += s * s_signal
                sum_ffi += f * f_signal
                sum_sfi += s * f_signal
                top = max(top, intensity[px + c])
            count += runs[q, 2] - first + 1
            q += 1
        npx[k] += count
        s_I[k] += sum_i
        s_sI[k] += sum_si
        s_fI[k] += sum_fi
        s_ssI[k] += sum_ssi
        s_ffI[k] += sum_ffi
        s_sfI[k] += sum_sfi
        bb_s0[k] = min(bb_s0[k], r0)
        bb_s1[k] = max(bb_s1[k], r1)
        bb_f0[k] = min(bb_f0[k], c0)
        bb_f1[k] = max(bb_f1[k], c1)
        max_intensity[k] = max(max_intensity[k], top)
    for k in range(npeaks):
        s_1[k] = npx[k]
        sum_intensity[k] = s_I[k]
        if s_I[k] != 0.0:
            s_raw[k] = s_sI[k] / s_I[k]
            f_raw[k] = s_fI[k] / s_I[k]
        else:
            s_raw[k] = np.nan
            f_raw[k] = np.nan
