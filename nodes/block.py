"""Label and properties over a block of sparse frames at once (replay of sparse files).

The block forms of the sparse nodes: the same kernels, called once per block
instead of once per point, with the node's own parameters. `BLOCK_NODES`
names the kinds that have one; a chain with any other node after the
threshold is replayed point by point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes.kernels.blocks import global_labels, label_block, split_block
from nodes.kernels.moments import peak_moments
from stream.core.item import PEAK_COLUMNS

BLOCK_NODES = ("label", "properties")


def block_chain_ok(chain: list[Any]) -> bool:
    """True if the sparse chain is label then properties, as block replay does it."""
    return [n.kind for n in chain] == list(BLOCK_NODES)


def label_frames(node: Any, row: np.ndarray, col: np.ndarray, intensity: np.ndarray,
                 nnz: np.ndarray) -> tuple[np.ndarray, ...]:
    """`Label.process` on every frame: (row, col, intensity, label, nnz, npeaks) of the
    pixels kept (blobs of at least node.min_pixels pixels, split at their local
    maxima as the node does), labels per frame."""
    pixel_ptr = np.zeros(nnz.shape[0] + 1, np.int64)
    np.cumsum(nnz, out=pixel_ptr[1:])
    labels = np.empty(row.shape[0], np.int32)
    keep = np.empty(row.shape[0], np.bool_)
    npeaks = np.empty(nnz.shape[0], np.int64)
    kept = label_block(row, col, pixel_ptr, node.min_pixels, labels, keep, npeaks)
    if kept < row.shape[0]:
        frame = np.repeat(np.arange(nnz.shape[0]), nnz)
        nnz = np.bincount(frame[keep], minlength=nnz.shape[0]).astype(np.int64)
        row, col, intensity, labels = row[keep], col[keep], intensity[keep], labels[keep]
        pixel_ptr = np.zeros(nnz.shape[0] + 1, np.int64)
        np.cumsum(nnz, out=pixel_ptr[1:])
    if getattr(node, "split", "none") == "local_max":
        split_block(row, col, intensity, pixel_ptr, node.prominence, node.prominence_sigma,
                    node.min_pixels, labels, npeaks)
    return row, col, intensity, labels, nnz, npeaks


def properties_frames(row: np.ndarray, col: np.ndarray, intensity: np.ndarray,
                      labels: np.ndarray, nnz: np.ndarray,
                      npeaks: np.ndarray) -> dict[str, np.ndarray]:
    """`Properties.process` on every frame: the 2D peak tables, frame after frame."""
    pixel_ptr = np.zeros(nnz.shape[0] + 1, np.int64)
    np.cumsum(nnz, out=pixel_ptr[1:])
    table = {k: np.empty(int(npeaks.sum()), dt) for k, dt in PEAK_COLUMNS.items()}
    if row.shape[0]:
        peak_moments(row, col, intensity, global_labels(labels, pixel_ptr, npeaks), **table)
    return table
