"""Compressed frames on the wire (PROTOCOL.md encodings `bslz4` and `lz4`).

Both use the HDF5 filter framing that Eiger files and DECTRIS stream v2
carry: a 12-byte header (big endian u64 total bytes, u32 block bytes), then
per block a big endian u32 compressed size and one LZ4 block.

* `bslz4`: bitshuffle filter 32008. Blocks of `block bytes / itemsize`
  elements (0: bitshuffle's default, 8192 bytes), each bit-transposed before
  LZ4; the last partial block is rounded down to 8 elements and the final
  `size % 8` elements follow uncompressed.
* `lz4`: LZ4 filter 32004. Blocks of `block bytes` (more than the frame: one
  block); a block whose compressed size equals its size is stored as it is.

The receiving thread only checks the header here (`EncodedFrame.from_buffer`);
the frame is decompressed in the per-frame chain (`nodes.decode`), which is
where a corrupt body is found. `compress` is the sender's side, through the
reference implementations (the `bitshuffle` and `lz4` packages).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

COMPRESSED = ("bslz4", "lz4")
HEADER = 12
BSHUF_TARGET_BYTES = 8192  # bitshuffle's default block: 8192 bytes, whole 8 elements, >= 128
LZ4_DEFAULT_BLOCK = 1 << 30  # the LZ4 HDF5 filter's default block size


class EncodingError(ValueError):
    """A compressed frame whose header does not fit its shape and dtype."""


def default_block(itemsize: int) -> int:
    """bitshuffle's block size in elements when the header says 0."""
    return max(BSHUF_TARGET_BYTES // itemsize // 8 * 8, 128)


def lz4_bound(nbytes: int) -> int:
    """The largest LZ4 block that `nbytes` can compress to (LZ4_COMPRESSBOUND)."""
    return nbytes + nbytes // 255 + 16


@dataclass(frozen=True, eq=False)
class EncodedFrame:
    """A frame as received, still compressed: decoded later, in the per-frame chain.

    `buffer` is the whole part (header and blocks), a zero-copy view of the
    received message; `block` is the block size from the header, in elements
    for bslz4 and in bytes for lz4 (never 0: bitshuffle's default filled in).
    """

    encoding: str
    shape: tuple[int, int]
    dtype: np.dtype
    buffer: memoryview
    block: int

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded frame."""
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    @property
    def data(self) -> np.ndarray:
        """The compressed bytes as a read-only uint8 array, without a copy. Read-only
        whatever holds them (bytes, or a received ZeroMQ frame's writable buffer):
        numba compiles a kernel apart for each kind, and the warm-up, which feeds
        bytes, would leave the received frames' kind to compile in the first scan."""
        data = np.frombuffer(self.buffer, np.uint8)
        data.flags.writeable = False
        return data

    def __reduce__(self):  # pickling copies the buffer (a memoryview does not pickle)
        return (_rebuild, (self.encoding, self.shape, self.dtype, bytes(self.buffer),
                           self.block))

    @classmethod
    def from_buffer(cls, encoding: str, shape: tuple[int, int], dtype: np.dtype,
                    buffer) -> EncodedFrame:
        """Check the header against shape and dtype (EncodingError says why)."""
        buf = memoryview(buffer).cast("B")
        dtype = np.dtype(dtype)
        nbytes = shape[0] * shape[1] * dtype.itemsize
        if encoding not in COMPRESSED:
            raise EncodingError(f"{encoding!r} is not a compressed encoding")
        if buf.nbytes < HEADER:
            raise EncodingError(f"{encoding} frame of {buf.nbytes} bytes is shorter than its "
                                f"{HEADER}-byte header")
        total, block_bytes = struct.unpack_from(">QI", buf)
        if total != nbytes:
            raise EncodingError(f"{encoding} header says {total} bytes, shape {list(shape)} "
                                f"{dtype.name} has {nbytes}")
        if encoding == "bslz4":
            block = _bslz4_block(block_bytes, dtype.itemsize)
            lo, hi = _bslz4_sizes(nbytes // dtype.itemsize, block, dtype.itemsize)
        else:
            if block_bytes == 0:
                raise EncodingError("lz4 header gives a block size of 0 bytes")
            block = min(block_bytes, nbytes)
            lo, hi = _lz4_sizes(nbytes, block)
        if not lo <= buf.nbytes <= hi:
            raise EncodingError(f"{encoding} frame has {buf.nbytes} bytes; its blocks need "
                                f"{lo} to {hi}")
        return cls(encoding, tuple(shape), dtype, buf, block)


def _rebuild(encoding: str, shape: tuple[int, int], dtype: np.dtype, data: bytes,
             block: int) -> EncodedFrame:
    return EncodedFrame(encoding, shape, dtype, memoryview(data), block)


def _bslz4_block(block_bytes: int, itemsize: int) -> int:
    if block_bytes == 0:
        return default_block(itemsize)
    if block_bytes % (8 * itemsize):
        raise EncodingError(f"bslz4 block size {block_bytes} bytes is not a whole number of "
                            f"8 elements of {itemsize} bytes")
    return block_bytes // itemsize


def _bslz4_sizes(nelem: int, block: int, itemsize: int) -> tuple[int, int]:
    """The fewest and most bytes a bslz4 frame of nelem elements can have."""
    nfull, rest = divmod(nelem, block)
    last = rest - rest % 8
    tail = (rest % 8) * itemsize
    nblocks = nfull + (last > 0)
    most = nfull * lz4_bound(block * itemsize) + (lz4_bound(last * itemsize) if last else 0)
    return HEADER + 5 * nblocks + tail, HEADER + 4 * nblocks + most + tail


def _lz4_sizes(nbytes: int, block: int) -> tuple[int, int]:
    nfull, rest = divmod(nbytes, block)
    nblocks = nfull + (rest > 0)
    most = nfull * lz4_bound(block) + (lz4_bound(rest) if rest else 0)
    return HEADER + 5 * nblocks, HEADER + 4 * nblocks + most


# ------------------------------------------------------------------ the sender's side


def compress(frame: np.ndarray, encoding: str, block: int = 0) -> EncodedFrame:
    """Compress a frame with the reference implementations (`bitshuffle`, `lz4`).

    `block`: elements per block for bslz4 (0: bitshuffle's default), bytes per
    block for lz4 (0: the LZ4 filter's default, 1 GiB, so one block).
    """
    arr = np.ascontiguousarray(frame)
    if arr.ndim != 2:
        raise ValueError(f"compress: frames are 2D, got shape {arr.shape}")
    if encoding == "bslz4":
        import bitshuffle

        block = block or default_block(arr.itemsize)
        if block % 8:
            raise ValueError(f"compress: bslz4 blocks are whole 8 elements, got {block}")
        body = bitshuffle.compress_lz4(arr.reshape(-1), block)
        head = struct.pack(">QI", arr.nbytes, block * arr.itemsize)
        data = head + body.tobytes()
    elif encoding == "lz4":
        import lz4.block

        size = min(block or LZ4_DEFAULT_BLOCK, max(arr.nbytes, 1))
        raw = memoryview(arr).cast("B")
        chunks = [struct.pack(">QI", arr.nbytes, size)]
        for start in range(0, arr.nbytes, size):
            chunk = raw[start:start + size]
            packed = lz4.block.compress(chunk, store_size=False)
            if len(packed) >= len(chunk):  # as the LZ4 filter does: keep it as it is
                packed = bytes(chunk)
            chunks += [struct.pack(">I", len(packed)), packed]
        data = b"".join(chunks)
    else:
        raise ValueError(f"compress: encoding must be one of {', '.join(COMPRESSED)}, "
                         f"got {encoding!r}")
    return EncodedFrame.from_buffer(encoding, arr.shape, arr.dtype, data)
