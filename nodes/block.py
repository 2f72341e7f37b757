"""Label and properties over a block of sparse frames at once (replay of sparse files).

The block forms of the sparse nodes: the same kernels, called once per block
instead of once per point, with the node's own parameters. `BLOCK_NODES`
names the kinds that have one. Before them, the nodes a sparse frame goes
through (`nodes.sparse`) of the kinds `PREFIX_NODES` (threshold, normalise,
correct's mask) run on each frame of the block as point by point; a chain
with any other node for sparse frames is replayed point by point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes.kernels.blocks import global_labels, label_block, split_block
from nodes.kernels.moments import peak_moments
from stream.core.item import PEAK_COLUMNS, Item, SparseFrame

BLOCK_NODES = ("label", "properties")
PREFIX_NODES = ("correct", "normalise", "threshold")


def block_chain_ok(chain: list[Any]) -> bool:
    """True if the sparse chain is label then properties, after nodes of `PREFIX_NODES`
    only, as block replay does it."""
    kinds = [n.kind for n in chain]
    return kinds[-2:] == list(BLOCK_NODES) and all(k in PREFIX_NODES for k in kinds[:-2])


def prefix_frames(nodes: list[Any], shape: tuple[int, int], first: int, row: np.ndarray,
                  col: np.ndarray, intensity: np.ndarray, nnz: np.ndarray,
                  counters: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """The sparse chain's nodes before label on every frame of a block, each frame
    through the nodes' own sparse paths (the same pixels, values and flags as point
    by point): (row, col, intensity, nnz, flags: {k: the k-th point's} if it has any)."""
    n = nnz.shape[0]
    flags: dict[int, list[str]] = {}
    if not nodes:
        return row, col, intensity, nnz, flags
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(nnz, out=ptr[1:])
    frames: list[SparseFrame] = []
    for k in range(n):
        a, b = int(ptr[k]), int(ptr[k + 1])
        item = Item(first + k, "", counters={c: float(v[k]) for c, v in counters.items()},
                    sparse=SparseFrame(shape, row[a:b], col[a:b], intensity[a:b]))
        for node in nodes:
            item = node.process(item)
        frames.append(item.sparse)
        if item.flags:
            flags[k] = item.flags
    nnz = np.array([f.nnz for f in frames], np.int64)
    if not frames:
        return row, col, intensity, nnz, flags
    return (np.concatenate([f.row for f in frames]), np.concatenate([f.col for f in frames]),
            np.concatenate([f.intensity for f in frames]).astype(np.float32, copy=False),
            nnz, flags)


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
