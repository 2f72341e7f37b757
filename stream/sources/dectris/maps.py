"""Per-pixel maps of a start message (flatfield, pixel mask), decoded when they arrive.

They come once per series, so they are decompressed here, on the receiving
thread, with the reference implementations (`bitshuffle`, `lz4`); frames are
not (they go on compressed to the workers).
"""

from __future__ import annotations

import logging
import struct

import numpy as np

from stream.core.encoded import HEADER, EncodedFrame
from stream.sources.dectris.common import DetectorError

log = logging.getLogger(__name__)


def decompress_map(frame: EncodedFrame, where: str) -> np.ndarray:
    """The decoded array of a bslz4 / lz4 frame (HDF5 filter framing), or DetectorError."""
    try:
        if frame.encoding == "bslz4":
            import bitshuffle

            body = np.frombuffer(frame.buffer, np.uint8)[HEADER:]
            n = frame.shape[0] * frame.shape[1]
            out = bitshuffle.decompress_lz4(body, (n,), frame.dtype, frame.block)
            return np.asarray(out).reshape(frame.shape)
        return np.frombuffer(_lz4_blocks(frame), frame.dtype).reshape(frame.shape)
    except DetectorError:
        raise
    except Exception as exc:  # the decompressors raise several types on corrupt data
        raise DetectorError(f"{where}: corrupt {frame.encoding} data: {exc}") from None


def _lz4_blocks(frame: EncodedFrame) -> bytes:
    import lz4.block

    buf, out, pos, left = frame.buffer, [], HEADER, frame.nbytes
    while left > 0:
        if pos + 4 > buf.nbytes:
            raise DetectorError("lz4 data ends inside a block header")
        (size,) = struct.unpack_from(">I", buf, pos)
        want = min(frame.block, left)
        chunk = buf[pos + 4:pos + 4 + size]
        block = bytes(chunk) if size == want else lz4.block.decompress(chunk, want)
        if len(block) != want:
            raise DetectorError(f"lz4 block gives {len(block)} bytes, not {want}")
        out.append(block)
        pos, left = pos + 4 + size, left - want
    return b"".join(out)


def map_fits(arr: np.ndarray | None, shape: tuple[int, ...], key: str, label: str):
    """A start map if it has the frames' shape (else dropped, with a warning)."""
    if arr is None or tuple(arr.shape) == tuple(shape):
        return arr
    log.warning("series %s: %s of shape %s does not fit frames of %s; not used", label,
                key, list(arr.shape), list(shape))
    return None
