"""Bitshuffle-LZ4 frames (HDF5 filter framing) decoded in numba.

`bslz4` (bitshuffle HDF5 filter 32008, as Eiger files and DECTRIS stream v2
carry it): a 12-byte header (big endian u64 total bytes, u32 block bytes, 0
meaning bitshuffle's default), then for each block of `block` elements a big
endian u32 compressed size and one LZ4 block (kernels/lz4.py) holding the
bit-transposed elements; the last partial block, rounded down to a multiple
of 8 elements, is compressed the same way, and the final `size % 8` elements
follow as they are. In a transposed block of n elements of `itemsize` bytes,
bit plane k = 8 * byte + bit is n / 8 bytes long and bit i of its byte m is
that bit of element 8 m + i.

* `bslz4_dense`: the whole frame, un-transposed 64 elements at a time (a
  byte transpose of 8 plane words, then bit transposes);
* `bslz4_correct_threshold`: `kernels.dense.correct_threshold` fused into the
  decoder: the same pixels with the same float32 arithmetic, block by block,
  without the dense frame. Only pixels that the bit planes show may be above
  the pre-cut (64 pixels at a time) and that are not masked are un-shuffled;
  the maps' cache lines are prefetched when a candidate is found.

Both return a status as kernels/lz4.py's decoders do (0 or an ERRORS code,
and the block), and check every index first: a corrupt frame is an error,
never a read or write outside the arrays. Hot loops call no function that
takes an array (numba would count references on every call); helpers that do
are called once per block.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import overload

from nodes.kernels.lz4 import (
    ERR_OVERRUN,
    ERR_TRAILING,
    ERR_TRUNCATED,
    HEADER,
    decode_block,
    next_block,
    prefetch,
    store8,
)

_BYTE = np.uint64(0xFF)
_M1 = np.uint64(0x00AA00AA00AA00AA)
_M2 = np.uint64(0x0000CCCC0000CCCC)
_M3 = np.uint64(0x00000000F0F0F0F0)
_B1 = np.uint64(0x00FF00FF00FF00FF)
_B2 = np.uint64(0x0000FFFF0000FFFF)
_B3 = np.uint64(0x00000000FFFFFFFF)


def candidate_planes(plimit: int, nbits: int) -> tuple[int, int]:
    """(klo, khi) for the bit-plane pre-selection of pixels above `plimit`.

    A value with a bit set in planes khi and up, or with all of planes
    klo .. khi - 1 set, is at least the top run of ones of `plimit`; every
    value above `plimit` is among them (exactly those if plimit + 1 is a power
    of two). (-1, -1): no pre-cut, every pixel is a candidate.
    """
    plimit = int(plimit)
    if plimit < 0:
        return -1, -1
    if plimit >= (1 << nbits) - 1:
        return nbits, nbits
    khi = plimit.bit_length()
    if (plimit + 1) & plimit == 0:  # plimit = 2**khi - 1
        return khi, khi
    klo = khi - 1
    while klo > 0 and (plimit >> (klo - 1)) & 1:
        klo -= 1
    return klo, khi


# ------------------------------------------------------------------ bit shuffle


@numba.njit(nogil=True, cache=True, inline="always")
def _transpose8(x):
    """Transpose the 8 x 8 bit matrix in a u64 (byte r, bit c -> byte c, bit r)."""
    t = (x ^ (x >> np.uint64(7))) & _M1
    x = x ^ t ^ (t << np.uint64(7))
    t = (x ^ (x >> np.uint64(14))) & _M2
    x = x ^ t ^ (t << np.uint64(14))
    t = (x ^ (x >> np.uint64(28))) & _M3
    return x ^ t ^ (t << np.uint64(28))


@numba.njit(nogil=True, cache=True, inline="always")
def _swap(x, y, mask, shift):
    return (x & mask) | ((y & mask) << shift), ((x >> shift) & mask) | (y & (mask << shift))


@numba.njit(nogil=True, cache=True, inline="always")
def _spread(x):
    """Bytes 0..3 of x to bytes 0, 2, 4, 6."""
    x &= _B3
    x = (x | (x << np.uint64(16))) & _B2
    return (x | (x << np.uint64(8))) & _B1


@numba.njit(nogil=True, cache=True, inline="always")
def _bytes8x8(a0, a1, a2, a3, a4, a5, a6, a7):
    """Transpose the 8 x 8 byte matrix of 8 u64 (a_r byte c -> result c byte r)."""
    u8 = np.uint64(8)
    u16 = np.uint64(16)
    u32 = np.uint64(32)
    a0, a1 = _swap(a0, a1, _B1, u8)
    a2, a3 = _swap(a2, a3, _B1, u8)
    a4, a5 = _swap(a4, a5, _B1, u8)
    a6, a7 = _swap(a6, a7, _B1, u8)
    a0, a2 = _swap(a0, a2, _B2, u16)
    a1, a3 = _swap(a1, a3, _B2, u16)
    a4, a6 = _swap(a4, a6, _B2, u16)
    a5, a7 = _swap(a5, a7, _B2, u16)
    a0, a4 = _swap(a0, a4, _B3, u32)
    a1, a5 = _swap(a1, a5, _B3, u32)
    a2, a6 = _swap(a2, a6, _B3, u32)
    a3, a7 = _swap(a3, a7, _B3, u32)
    return a0, a1, a2, a3, a4, a5, a6, a7


@numba.njit(nogil=True, cache=True)
def _unshuffle_words(block64, words, itemsize, out, o):
    """Un-transpose a block of 64 * words elements (planes of `words` u64, from
    block64) into out[o:o + 64 * words * itemsize] (uint8); False if that does
    not fit."""
    if o < 0 or o + 64 * words * itemsize > out.size or 8 * itemsize * words > block64.size:
        return False
    for w in range(words):
        base = o + 64 * w * itemsize
        if itemsize == 2:  # EIGER's uint16: both bytes of 8 pixels make two u64
            k = w
            lo = _bytes8x8(block64[k], block64[k + words], block64[k + 2 * words],
                           block64[k + 3 * words], block64[k + 4 * words],
                           block64[k + 5 * words], block64[k + 6 * words],
                           block64[k + 7 * words])
            k = 8 * words + w
            h0 = block64[k]
            h1 = block64[k + words]
            h2 = block64[k + 2 * words]
            h3 = block64[k + 3 * words]
            h4 = block64[k + 4 * words]
            h5 = block64[k + 5 * words]
            h6 = block64[k + 6 * words]
            h7 = block64[k + 7 * words]
            hi = _bytes8x8(h0, h1, h2, h3, h4, h5, h6, h7)
            for q in range(8):
                x0 = lo[q]
                if x0 != 0:
                    x0 = _transpose8(x0)
                x1 = hi[q]
                if x1 != 0:
                    x1 = _transpose8(x1)
                g = base + 16 * q
                store8(out, g, _spread(x0) | (_spread(x1) << np.uint64(8)))
                store8(out, g + 8, _spread(x0 >> np.uint64(32))
                        | (_spread(x1 >> np.uint64(32)) << np.uint64(8)))
            continue
        for j in range(itemsize):
            k = 8 * j * words + w
            x = _bytes8x8(block64[k], block64[k + words], block64[k + 2 * words],
                          block64[k + 3 * words], block64[k + 4 * words],
                          block64[k + 5 * words], block64[k + 6 * words],
                          block64[k + 7 * words])
            for q in range(8):
                xq = x[q]
                if xq != 0:
                    xq = _transpose8(xq)
                g = base + 8 * q * itemsize + j
                for i in range(8):
                    out[g + i * itemsize] = np.uint8((xq >> np.uint64(8 * i)) & _BYTE)
    return True


@numba.njit(nogil=True, cache=True)
def _unshuffle_groups(block, nb, m0, m1, itemsize, out, o):
    """Un-transpose groups m0 .. m1 - 1 (8 elements each) of a block whose planes are
    nb bytes long into out[o:o + 8 * (m1 - m0) * itemsize] (uint8)."""
    for m in range(m0, m1):
        g = o + 8 * (m - m0) * itemsize
        for j in range(itemsize):
            x = np.uint64(0)
            for b in range(8):
                x |= np.uint64(block[(8 * j + b) * nb + m]) << np.uint64(8 * b)
            if x != 0:
                x = _transpose8(x)
            for i in range(8):
                out[g + i * itemsize + j] = np.uint8((x >> np.uint64(8 * i)) & _BYTE)


@numba.njit(nogil=True, cache=True)
def bslz4_dense(src, block, itemsize, out, scratch, scratch64):
    """Decode a bslz4 frame (header included) into `out` (uint8, the frame's bytes).

    `block` is the block size in elements; `scratch` (uint8) and `scratch64`
    (its u64 view) hold at least one block. Returns (status, block index).
    """
    nelem = out.size // itemsize
    if out.size % itemsize or block <= 0 or block % 8 \
            or min(scratch.size, 8 * scratch64.size) < min(block, nelem) * itemsize:
        return ERR_OVERRUN, 0
    nfull = nelem // block
    last = nelem % block - nelem % block % 8
    s = HEADER
    for b in range(nfull + (1 if last > 0 else 0)):
        n = block if b < nfull else last
        start, end = next_block(src, s)
        if start < 0:
            return start, b
        status = decode_block(src, start, end, scratch, 0, n * itemsize)
        if status < 0:
            return status, b
        s = end
        if n % 64 == 0:
            if not _unshuffle_words(scratch64, n // 64, itemsize, out, b * block * itemsize):
                return ERR_OVERRUN, b
        else:
            _unshuffle_groups(scratch, n // 8, 0, n // 8, itemsize, out, b * block * itemsize)
    tail = out.size - (nfull * block + last) * itemsize
    if src.size - s < tail:
        return ERR_TRUNCATED, nfull
    if src.size - s > tail:
        return ERR_TRAILING, nfull
    for i in range(tail):
        out[out.size - tail + i] = src[s + i]
    return 0, 0


# ------------------------------------------------------------ straight to sparse


def _unsigned(array):
    """Does the array hold unsigned integers (known when numba compiles)?"""
    return array.dtype.kind == "u"


@overload(_unsigned)
def _unsigned_typed(array):
    answer = isinstance(array.dtype, types.Integer) and not array.dtype.signed
    return lambda array: answer


@numba.njit(nogil=True, cache=True)
def bslz4_correct_threshold(src, block, ncols, klo, khi, valid, scratch, scratch64, tmp, tmp8,
                            cand_p, cand_x, precut, use_precut, mask, dark0, dark_map, invflat0,
                            invflat_map, scale, cut, cut_map, delta, rows, cols, vals, hist, hlo,
                            hinv, hhi):
    """`correct_threshold` of a bslz4 frame decoded block by block: (status, block, n, emax).

    The frame has cand_x's dtype and `ncols` pixels a row (its size is
    mask-independent: tmp8.size // 8 bytes a pixel, the header's total).
    `scratch` (uint8, a whole number of u64, one block) and `scratch64` (its
    u64 view) receive each decoded block; `tmp` (8 pixels of the frame's
    dtype) and `tmp8` (its uint8 view) one un-shuffled group; `cand_p`
    (int64) and `cand_x` (frame dtype), at least `block` long, the candidate
    pixels of a block (and 8 more). Candidates: pixels whose planes pass (klo, khi) of
    `candidate_planes` (khi < 0: all) and whose bit in `valid` is set (one
    byte per 8 pixels; empty: none masked; given, it must leave out every
    pixel of `mask`, which is then not read). The rest is correct_threshold's
    test on them, in raster order.
    """
    itemsize = tmp8.size // 8
    nbits = 8 * itemsize
    if src.size < HEADER:
        return ERR_TRUNCATED, 0, 0, -np.inf
    nelem = ((np.int64(src[0]) << 56) | (np.int64(src[1]) << 48) | (np.int64(src[2]) << 40)
             | (np.int64(src[3]) << 32) | (np.int64(src[4]) << 24) | (np.int64(src[5]) << 16)
             | (np.int64(src[6]) << 8) | np.int64(src[7])) // itemsize
    if block <= 0 or block % 8 or scratch.size < min(block, nelem) * itemsize \
            or cand_p.size < min(block, nelem) + 8 or cand_x.size < min(block, nelem) + 8:
        return ERR_OVERRUN, 0, 0, -np.inf
    if ncols <= 0 or nelem % ncols or 0 < valid.size < (nelem + 7) // 8 \
            or 8 * scratch64.size < min(block, nelem) * itemsize:
        return ERR_OVERRUN, 0, 0, -np.inf
    for shape in (mask.shape, dark_map.shape, invflat_map.shape, cut_map.shape):
        if shape[0] * shape[1] > 0 and (shape[0] != nelem // ncols or shape[1] != ncols):
            return ERR_OVERRUN, 0, 0, -np.inf  # maps of another frame shape
    use_valid = valid.size > 0
    use_mask = mask.size > 0 and not use_valid  # `valid` has dropped the masked pixels
    use_dark = dark_map.size > 0
    use_flat = invflat_map.size > 0
    use_cut = cut_map.size > 0
    nfull = nelem // block
    last = nelem % block - nelem % block % 8
    nblocks = nfull + (1 if last > 0 else 0)
    n = 0
    emax = -np.inf
    s = HEADER
    ones = ~np.uint64(0)
    acc = np.zeros(8, np.uint64)
    hws = np.empty(min(block, nelem) // 64 + 1, np.uint64)  # a block's words' pre-selection
    runs = np.empty_like(hws)
    unsigned = _unsigned(tmp)
    r = 0  # the row of pixel row0
    row0 = 0
    for b in range(nblocks + 1):
        ncand = 0
        if b < nblocks:
            nbe = block if b < nfull else last
            start, end = next_block(src, s)
            if start < 0:
                return start, b, n, emax
            status = decode_block(src, start, end, scratch, 0, nbe * itemsize)
            if status < 0:
                return status, b, n, emax
            s = end
            p0 = b * block
            nb = nbe // 8
            words = nb // 8 if nb % 8 == 0 and khi >= 0 else 0
            if words > 0:  # each word of 64 pixels' pre-selection, plane by plane (SIMD)
                hws[:words] = 0
                for k in range(khi, nbits):
                    for w in range(words):
                        hws[w] |= scratch64[k * words + w]
                if klo < khi:
                    runs[:words] = ones
                    for k in range(klo, khi):
                        for w in range(words):
                            runs[w] &= scratch64[k * words + w]
                    for w in range(words):
                        hws[w] |= runs[w]
            hw = np.uint64(0)
            m = 0
            while m < nb:
                if words > 0:
                    if m % 8 == 0:
                        hw = hws[m // 8]
                        if hw == 0:
                            m += 8
                            continue
                    h = np.int64((hw >> np.uint64(8 * (m % 8))) & _BYTE)
                elif khi >= 0:
                    h = 0
                    for k in range(khi, nbits):
                        h |= np.int64(scratch[k * nb + m])
                    if klo < khi:
                        run8 = 255
                        for k in range(klo, khi):
                            run8 &= np.int64(scratch[k * nb + m])
                        h |= run8
                else:
                    h = 255
                if use_valid and h != 0:
                    h &= np.int64(valid[p0 // 8 + m])
                if h != 0:  # un-shuffle the group (inline: no call per group)
                    for i in range(8):
                        acc[i] = 0
                    for j in range(itemsize):
                        x = np.uint64(0)
                        for b in range(8):
                            x |= np.uint64(scratch[(8 * j + b) * nb + m]) << np.uint64(8 * b)
                        if x != 0:
                            x = _transpose8(x)
                        for i in range(8):
                            acc[i] |= ((x >> np.uint64(8 * i)) & _BYTE) << np.uint64(8 * j)
                    p = p0 + 8 * m
                    if use_dark:  # the maps' lines, for the test after this block
                        prefetch(dark_map, p)
                    if use_flat:
                        prefetch(invflat_map, p)
                    if use_cut:
                        prefetch(cut_map, p)
                    if unsigned:  # the bits are the value
                        for i in range(8):  # written always, counted if a candidate
                            cand_p[ncand] = p + i
                            cand_x[ncand] = acc[i]
                            ncand += (h >> i) & 1
                    else:  # the bits of another dtype, through its bytes
                        for i in range(8):
                            for j in range(itemsize):
                                tmp8[i * itemsize + j] = np.uint8(
                                    (acc[i] >> np.uint64(8 * j)) & _BYTE)
                        for i in range(8):
                            cand_p[ncand] = p + i
                            cand_x[ncand] = tmp[i]
                            ncand += (h >> i) & 1
                m += 1
        else:  # the last size % 8 pixels, as they are
            done = nfull * block + last
            tail = (nelem - done) * itemsize
            if src.size - s < tail:
                return ERR_TRUNCATED, nfull, n, emax
            if src.size - s > tail:
                return ERR_TRAILING, nfull, n, emax
            for p in range(done, nelem):
                if use_valid and not (valid[p // 8] >> (p % 8)) & 1:
                    continue
                for j in range(itemsize):
                    tmp8[j] = src[s + (p - done) * itemsize + j]
                cand_p[ncand] = p
                cand_x[ncand] = tmp[0]
                ncand += 1
        for t in range(ncand):  # correct_threshold's test, same arithmetic
            x = cand_x[t]
            if use_precut and not x > precut:
                continue
            p = cand_p[t]
            while p >= row0 + ncols:  # candidates come in raster order
                r += 1
                row0 += ncols
            c = p - row0
            if use_mask and mask[r, c]:
                continue
            d = dark_map[r, c] if use_dark else dark0
            g = invflat_map[r, c] if use_flat else invflat0
            v = ((np.float32(x) - d) * g) * scale
            thr = np.float64(cut_map[r, c]) if use_cut else cut
            excess = np.float64(v) - thr
            if excess > delta:
                if n < rows.size:
                    rows[n] = r
                    cols[n] = c
                    vals[n] = v
                if excess > emax and excess < np.inf:
                    emax = excess
                if hist.size > 0:
                    if excess >= hhi:
                        j = hist.size - 1
                    else:
                        j = int((excess - hlo) * hinv)
                        if j >= hist.size:
                            j = hist.size - 1
                        elif j < 0:
                            j = 0
                    hist[j] += 1
                n += 1
    return 0, 0, n, emax
