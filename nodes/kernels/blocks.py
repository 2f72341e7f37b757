"""The per-frame kernels run over a block of frames in one call (replay of sparse files).

Frame k of a block is pixels pixel_ptr[k] .. pixel_ptr[k + 1] of the
concatenated arrays; each frame goes through exactly the kernel the per-point
node calls, so a block gives the same numbers as its frames one by one. An
empty frame costs one comparison.
"""

from __future__ import annotations

import numba
import numpy as np

from nodes.kernels.label import connected_pixels, remove_small, split_local_max


@numba.njit(nogil=True, cache=True)
def label_block(row, col, pixel_ptr, min_pixels, labels, keep, npeaks):
    """Label every frame (labels 1..npeaks[k] per frame); `keep` marks the pixels
    of blobs with at least `min_pixels` pixels. Returns the pixels kept."""
    kept = 0
    for k in range(npeaks.shape[0]):
        s = pixel_ptr[k]
        e = pixel_ptr[k + 1]
        if e == s:
            npeaks[k] = 0
            continue
        n = connected_pixels(row[s:e], col[s:e], labels[s:e])
        if min_pixels > 1 and n:
            n = remove_small(labels[s:e], n, min_pixels, keep[s:e])
        else:
            keep[s:e] = True
        npeaks[k] = n
        for i in range(s, e):
            kept += keep[i]
    return kept


@numba.njit(nogil=True, cache=True)
def split_block(row, col, intensity, pixel_ptr, prominence, prominence_sigma, min_pixels,
                labels, npeaks):
    """`split_local_max` on every frame of labelled, kept pixels (blobs 1..npeaks[k]):
    new labels and npeaks, in place."""
    for k in range(npeaks.shape[0]):
        s = pixel_ptr[k]
        e = pixel_ptr[k + 1]
        if e > s and npeaks[k]:
            npeaks[k] = split_local_max(row[s:e], col[s:e], intensity[s:e], labels[s:e],
                                        npeaks[k], prominence, prominence_sigma, min_pixels)


@numba.njit(nogil=True, cache=True)
def global_labels(labels, pixel_ptr, npeaks):
    """Per-frame labels 1..npeaks[k] -> labels unique over the block (frame k's
    first peak is 1 + sum(npeaks[:k])), for one moments pass over all frames."""
    out = np.empty(labels.shape[0], np.int32)
    base = 0
    for k in range(npeaks.shape[0]):
        for i in range(pixel_ptr[k], pixel_ptr[k + 1]):
            out[i] = labels[i] + base
        base += npeaks[k]
    return out
