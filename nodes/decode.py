"""Compressed frames (bslz4, lz4) decoded in the per-frame chain, never on the receiver.

* `dense(frame)`: the whole frame (kernels/bslz4.py, kernels/lz4.py), into a
  new array, or into this thread's buffer that the next frame reuses;
* `sparse_pass(frame, ...)`: `kernels.dense.correct_threshold` straight from
  a bslz4 frame, block by block, without the dense frame. `DensePass` and
  `Threshold` take it when `goes_sparse(frame, use_precut)`: an unsigned
  dtype and a pre-cut, so that only the pixels the bit planes show may pass
  are un-shuffled (twice as fast as decoding then a dense pass, on EIGER2
  4M frames with ~300 spots, tools/bench_stream.py);
* `Decode`: the node `fuse` puts first when a chain starts with a node that
  needs the dense frame (correct or normalise not fused with a threshold).

A corrupt body is a ValueError naming the encoding, the block and what is
wrong: the point is bad, the scan goes on.
"""

from __future__ import annotations

import threading
from typing import ClassVar

import numpy as np

from nodes.kernels.bslz4 import bslz4_correct_threshold, bslz4_dense, candidate_planes
from nodes.kernels.lz4 import ERRORS, lz4_dense
from stream.core.encoded import EncodedFrame
from stream.core.item import Item
from stream.core.scan import Scan

NO_VALID = np.zeros(0, np.uint8)
SLACK = 64  # bytes past a block in the scratch buffer, so LZ4 copies 16 bytes at a time


class _Buffers(threading.local):
    """This thread's scratch buffers, grown on demand and kept."""

    def __init__(self) -> None:
        self.scratch64 = np.zeros(0, np.uint64)
        self.frame = np.zeros(0, np.uint8)
        self.cand: dict[np.dtype, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def scratch(self, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        words = (nbytes + SLACK + 7) // 8
        if self.scratch64.size < words:
            self.scratch64 = np.zeros(words, np.uint64)
        return self.scratch64.view(np.uint8), self.scratch64

    def dense(self, nbytes: int) -> np.ndarray:
        if self.frame.size < nbytes:
            self.frame = np.empty(nbytes, np.uint8)
        return self.frame[:nbytes]

    def candidates(self, dtype: np.dtype, size: int):
        bufs = self.cand.get(dtype)
        if bufs is None or bufs[0].size < size:
            tmp = np.zeros(8, dtype)
            bufs = (np.empty(size + 8, np.int64), np.empty(size + 8, dtype), tmp)
            self.cand[dtype] = bufs
        return bufs


_buffers = _Buffers()


def _check(frame: EncodedFrame, status: int, block: int) -> None:
    if status < 0:
        raise ValueError(f"{frame.encoding} frame: block {block}: {ERRORS[status]}")


def dense(frame: EncodedFrame, reuse: bool = False) -> np.ndarray:
    """The decoded frame: a new array, or (`reuse`) this thread's buffer, which the
    next frame decoded in this thread overwrites."""
    out = _buffers.dense(frame.nbytes) if reuse else np.empty(frame.nbytes, np.uint8)
    if frame.encoding == "bslz4":
        itemsize = frame.dtype.itemsize
        scratch, scratch64 = _buffers.scratch(min(frame.block * itemsize, frame.nbytes))
        status, block = bslz4_dense(frame.data, frame.block, itemsize, out, scratch, scratch64)
    elif frame.encoding == "lz4":
        status, block = lz4_dense(frame.data, frame.block, out)
    else:
        raise ValueError(f"cannot decode encoding {frame.encoding!r}")
    _check(frame, status, block)
    return out.view(frame.dtype).reshape(frame.shape)


def goes_sparse(frame: EncodedFrame, use_precut: bool) -> bool:
    """Is `sparse_pass` the faster way for this frame (else decode, then a dense pass)?"""
    return frame.encoding == "bslz4" and frame.dtype.kind == "u" and use_precut


def valid_bits(mask: np.ndarray | None) -> np.ndarray:
    """One byte per 8 pixels (flat order), bit i set if pixel 8 g + i is not masked."""
    if mask is None or mask.size == 0:
        return NO_VALID
    return np.packbits(np.asarray(mask).ravel() == 0, bitorder="little")


def sparse_pass(frame: EncodedFrame, valid: np.ndarray, precut, use_precut, mask, dark0,
                dark_map, invflat0, invflat_map, scale, cut, cut_map, delta, rows, cols, vals,
                hist, hlo, hinv, hhi) -> tuple[int, float]:
    """correct_threshold's (n, emax) and kept pixels, straight from a bslz4 frame."""
    dtype, itemsize = frame.dtype, frame.dtype.itemsize
    if frame.encoding != "bslz4":
        raise ValueError(f"sparse_pass decodes bslz4 frames, not {frame.encoding}")
    if use_precut and dtype.kind == "u":
        klo, khi = candidate_planes(int(precut), 8 * itemsize)
    else:
        klo = khi = -1
    nelem = frame.shape[0] * frame.shape[1]
    size = min(frame.block, nelem)
    scratch, scratch64 = _buffers.scratch(size * itemsize)
    cand_p, cand_x, tmp = _buffers.candidates(dtype, size)
    status, block, n, emax = bslz4_correct_threshold(
        frame.data, frame.block, frame.shape[1], klo, khi, valid, scratch, scratch64, tmp,
        tmp.view(np.uint8), cand_p, cand_x, dtype.type(precut), use_precut, mask, dark0,
        dark_map, invflat0, invflat_map, scale, cut, cut_map, delta, rows, cols, vals, hist,
        hlo, hinv, hhi)
    _check(frame, status, block)
    return n, emax


# The encodings whose kernels the nodes compile at setup, before the first frame.
# All by default; the config narrows it to the frame kinds of `[source] warmup`
# (`Config.build_nodes`), so a raw-only setup compiles no decoder. A frame of
# another encoding compiles its kernels when it first comes.
_WARM = {"bslz4", "lz4"}


def warm_encodings(encodings: set[str] | list[str]) -> None:
    """Compile ahead only the kernels of these encodings ("raw" needs none)."""
    _WARM.clear()
    _WARM.update(e for e in encodings if e in ("bslz4", "lz4"))


def warms(encoding: str) -> bool:
    """Are `encoding`'s kernels compiled at setup?"""
    return encoding in _WARM


def warmup(dtype: str | np.dtype, straight: bool = False) -> None:
    """Compile the dense decoders for `dtype` of the encodings compiled ahead (a buffer
    too short to decode: an error status). `straight`: the caller takes bslz4 frames
    of this dtype straight to sparse (`sparse_pass`), not through bslz4's decoder."""
    dtype = np.dtype(dtype)
    src = np.frombuffer(bytes(16), np.uint8)  # read-only, as a received part is
    out = np.empty(8 * dtype.itemsize, np.uint8)
    scratch, scratch64 = _buffers.scratch(out.size)
    if "bslz4" in _WARM and not straight:
        bslz4_dense(src, 8, dtype.itemsize, out, scratch, scratch64)
    if "lz4" in _WARM:
        lz4_dense(src, 8, out)


class Decode:
    """Decode a compressed frame into a dense one, for the nodes that need it."""

    kind: ClassVar[str] = "decode"
    settable: ClassVar[tuple[str, ...]] = ()

    def setup(self, scan: Scan) -> None:
        warmup(scan.detector()[1].dtype)

    def process(self, item: Item) -> Item:
        if isinstance(item.frame, EncodedFrame):
            item.frame = dense(item.frame)
        return item
