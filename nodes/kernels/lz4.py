"""LZ4 blocks, and frames in the LZ4 HDF5 filter's framing.

`lz4` frames (LZ4 HDF5 filter 32004, DECTRIS stream v2's `lz4`): a 12-byte
header (big endian u64 total bytes, u32 block bytes), then per block a big
endian u32 compressed size and one LZ4 block, or the block as it is when the
size equals the block's; the last block may be short. `decode_block` is also
what bitshuffle-LZ4 (kernels/bslz4.py) decodes each block with: liblz4's
LZ4_decompress_safe where the system has it, else `lz4_block`, our numba
decoder (`DECODER` says which).

The decoders write into caller-owned arrays and return a status: 0, or one
of the negative ERRORS codes (with the block it happened in). Every read of
the input and every write of the output is checked first, so a truncated or
garbled buffer gives an error, never a read or write outside the arrays.
`lz4_block` copies 32 and 8 bytes at a time (unaligned loads and stores,
`copy32`, `_load8` / `store8`), which only ever touch bytes the checks allow.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.extending import intrinsic

HEADER = 12
ERR_TRUNCATED = -1   # the input ends inside a block or a sequence
ERR_OFFSET = -2      # an LZ4 match reaches before the start of its block
ERR_OVERRUN = -3     # a block decodes to more bytes than it holds
ERR_SHORT = -4       # a block decodes to fewer bytes than it holds
ERR_TRAILING = -5    # bytes left after the last block
ERR_CORRUPT = -6     # liblz4 refused the block (it does not say why)
ERRORS = {
    ERR_TRUNCATED: "the compressed data ends early (truncated, or a size field is wrong)",
    ERR_OFFSET: "an LZ4 match points before the start of its block",
    ERR_OVERRUN: "a block decodes to more bytes than it should",
    ERR_SHORT: "a block decodes to fewer bytes than it should",
    ERR_TRAILING: "bytes are left over after the last block",
    ERR_CORRUPT: "an LZ4 block is corrupt (truncated, or a match before its start)",
}

@intrinsic
def _load8(typingctx, array, index):
    """8 bytes of a uint8 array from `index` on, as a u64 (unaligned; bounds are the
    caller's)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)
    return types.uint64(array, index), codegen


@intrinsic
def store8(typingctx, array, index, value):
    """Store a u64 as 8 bytes of a uint8 array from `index` on (bounds are the caller's)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        builder.store(args[2], ptr, align=1)
        return context.get_dummy_value()
    return types.void(array, index, types.uint64), codegen


@intrinsic
def copy32(typingctx, dst, d, src, s):
    """dst[d:d + 32] = src[s:s + 32] as one unaligned 32-byte load and store (the
    ranges must not overlap; bounds are the caller's)."""
    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.IntType(64), 4).as_pointer()
        to = context.make_array(sig.args[0])(context, builder, args[0]).data
        fr = context.make_array(sig.args[2])(context, builder, args[2]).data
        value = builder.load(builder.bitcast(builder.gep(fr, [args[3]]), vec), align=1)
        builder.store(value, builder.bitcast(builder.gep(to, [args[1]]), vec), align=1)
        return context.get_dummy_value()
    return types.void(dst, d, src, s), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask for the cache line of flat element `index` of a C-contiguous array (a hint:
    never faults, whatever the address)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr.type], fnty)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(array, index), codegen


@numba.njit(nogil=True, cache=True)
def _outside(src, s, s_end, dst, d, d_end):
    """True if src[s:s_end] or dst[d:d_end] is not a range of its array."""
    return s < 0 or d < 0 or s > s_end or d > d_end or s_end > src.size or d_end > dst.size


@numba.njit(nogil=True, cache=True)
def lz4_block(src, s, s_end, dst, d, d_end):
    """Decode the LZ4 block src[s:s_end] into exactly dst[d:d_end]: 0 or an error code."""
    if _outside(src, s, s_end, dst, d, d_end):
        return ERR_OVERRUN
    d0 = d
    while True:
        if s >= s_end:
            return ERR_TRUNCATED
        token = np.int64(src[s])
        s += 1
        lit = token >> 4
        if lit == 15:
            while True:
                if s >= s_end:
                    return ERR_TRUNCATED
                b = np.int64(src[s])
                s += 1
                lit += b
                if b != 255:
                    break
        if lit > s_end - s:
            return ERR_TRUNCATED
        if lit > d_end - d:
            return ERR_OVERRUN
        if lit <= 16 and s + 16 <= src.size and d + 16 <= dst.size:
            # short literals: copy 16 bytes (what lies past the literals in dst is
            # overwritten later or is not part of the output)
            store8(dst, d, _load8(src, s))
            store8(dst, d + 8, _load8(src, s + 8))
        else:
            i = 0
            while i + 32 <= lit:
                copy32(dst, d + i, src, s + i)
                i += 32
            while i + 8 <= lit:
                store8(dst, d + i, _load8(src, s + i))
                i += 8
            while i < lit:
                dst[d + i] = src[s + i]
                i += 1
        s += lit
        d += lit
        if s == s_end:  # the last sequence has literals only
            return 0 if d == d_end else ERR_SHORT
        if s_end - s < 2:
            return ERR_TRUNCATED
        offset = np.int64(src[s]) | (np.int64(src[s + 1]) << 8)
        s += 2
        if offset == 0 or offset > d - d0:
            return ERR_OFFSET
        length = token & 15
        if length == 15:
            while True:
                if s >= s_end:
                    return ERR_TRUNCATED
                b = np.int64(src[s])
                s += 1
                length += b
                if b != 255:
                    break
        length += 4
        if length > d_end - d:
            return ERR_OVERRUN
        if offset >= 8 and length <= 16 and d + 16 <= dst.size:
            store8(dst, d, _load8(dst, d - offset))
            store8(dst, d + 8, _load8(dst, d - offset + 8))
            d += length
            continue
        if offset >= length:  # no overlap: a plain copy
            i = 0
            while i + 32 <= length:
                copy32(dst, d + i, dst, d - offset + i)
                i += 32
            while i + 8 <= length:
                store8(dst, d + i, _load8(dst, d - offset + i))
                i += 8
            while i < length:
                dst[d + i] = dst[d - offset + i]
                i += 1
            d += length
            continue
        # overlapping: the output repeats every `offset` bytes. Write one period (at
        # least 8 bytes) of it, then copy what is written so far, doubling each
        # time: the copies never overlap their source, so the loads do not wait on
        # the stores just made
        i = min(length, offset * ((8 + offset - 1) // offset))
        if offset < 8:
            for j in range(i):
                dst[d + j] = dst[d - offset + j]
        else:
            j = 0
            while j + 8 <= i:
                store8(dst, d + j, _load8(dst, d - offset + j))
                j += 8
            while j < i:
                dst[d + j] = dst[d - offset + j]
                j += 1
        while i < length:
            k = min(i, length - i)  # i is a whole number of periods
            j = 0
            while j + 32 <= k:
                copy32(dst, d + i + j, dst, d + j)
                j += 32
            while j + 8 <= k:
                store8(dst, d + i + j, _load8(dst, d + j))
                j += 8
            while j < k:
                dst[d + i + j] = dst[d + j]
                j += 1
            i += k
        d += length


@numba.njit(nogil=True, cache=True)
def next_block(src, s):
    """(start, end) of the compressed block whose size field is at s; start < 0: error."""
    if s < 0 or src.size - s < 4:
        return ERR_TRUNCATED, 0
    size = ((np.int64(src[s]) << 24) | (np.int64(src[s + 1]) << 16)
            | (np.int64(src[s + 2]) << 8) | np.int64(src[s + 3]))
    if size > src.size - s - 4:
        return ERR_TRUNCATED, 0
    return s + 4, s + 4 + size


@numba.njit(nogil=True, cache=True)
def lz4_dense(src, block_bytes, out):
    """Decode an lz4 frame (LZ4 HDF5 filter framing, header included) into `out` (uint8)."""
    if block_bytes <= 0:
        return ERR_OVERRUN, 0
    s = HEADER
    d = 0
    b = 0
    while d < out.size:
        n = min(block_bytes, out.size - d)
        start, end = next_block(src, s)
        if start < 0:
            return start, b
        if end - start == n:  # stored as it is
            for i in range(n):
                out[d + i] = src[start + i]
        else:
            status = decode_block(src, start, end, out, d, d + n)
            if status < 0:
                return status, b
        d += n
        s = end
        b += 1
    if s != src.size:
        return ERR_TRAILING, b
    return 0, 0


# ------------------------------------------------------------ liblz4

_SYMBOL = "peakstream_lz4_decompress"  # int (const char*, char*, int src_size, int capacity)
_CSIG = types.int32(types.CPointer(types.uint8), types.CPointer(types.uint8), types.int32,
                    types.int32)
_fallback = None  # the numba stand-in's C callback, when bound (kept alive: its address is)


def _lz4_decompress_numba(src_ptr, dst_ptr, src_size, capacity):
    """LZ4_decompress_safe's contract, by `lz4_block` (where there is no liblz4): the
    decoded size, or a negative number; decodes exactly `capacity` bytes or fails."""
    src = numba.carray(src_ptr, (src_size,))
    dst = numba.carray(dst_ptr, (capacity,))
    status = lz4_block(src, 0, src_size, dst, 0, capacity)
    return capacity if status == 0 else status


def _bind_decoder() -> str:
    """Point `_SYMBOL` at liblz4's LZ4_decompress_safe, the reference decoder (0.61 ms
    against our numba decoder's 0.97 for the LZ4 blocks of a bslz4 EIGER2 4M frame,
    the largest part of its threshold), or at `_lz4_decompress_numba` when the
    library is not there. Each reads only src[:src_size] and writes only
    dst[:capacity], whatever the input. Returns which one."""
    for name in ("liblz4.so.1", "liblz4.dylib", None):
        name = name or ctypes.util.find_library("lz4")  # the search (may run ldconfig) last
        if not name:
            continue
        try:
            fn = ctypes.CDLL(name).LZ4_decompress_safe
        except (OSError, AttributeError):
            continue
        binding.add_symbol(_SYMBOL, ctypes.cast(fn, ctypes.c_void_p).value)
        return f"liblz4 ({name})"
    global _fallback  # noqa: PLW0603
    _fallback = numba.cfunc(_CSIG, nogil=True, cache=True)(_lz4_decompress_numba)
    binding.add_symbol(_SYMBOL, _fallback.address)
    return "numba"


DECODER = _bind_decoder()


@intrinsic
def _c_decompress(typingctx, src, s, dst, d, src_size, capacity):
    """`_SYMBOL`(&src[s], &dst[d], src_size, capacity) (bounds are the caller's)."""
    def codegen(context, builder, sig, args):
        u8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(i32, [u8p, u8p, i32, i32])
        fn = builder.module.globals.get(_SYMBOL) or ir.Function(builder.module, fnty, _SYMBOL)
        a = context.make_array(sig.args[0])(context, builder, args[0]).data
        b = context.make_array(sig.args[2])(context, builder, args[2]).data
        return builder.call(fn, [builder.bitcast(builder.gep(a, [args[1]]), u8p),
                                 builder.bitcast(builder.gep(b, [args[3]]), u8p),
                                 builder.trunc(args[4], i32), builder.trunc(args[5], i32)])
    return types.int32(src, s, dst, d, types.int64, types.int64), codegen


@numba.njit(nogil=True, cache=True)
def decode_block(src, s, s_end, dst, d, d_end):
    """`lz4_block`'s contract (exactly dst[d:d_end] from src[s:s_end]: 0 or an error
    code) by the bound decoder (`DECODER`)."""
    if _outside(src, s, s_end, dst, d, d_end) or max(s_end - s, d_end - d) > 0x7FFFFFFF:
        return ERR_OVERRUN  # (liblz4 takes int sizes)
    got = _c_decompress(src, s, dst, d, np.int64(s_end - s), np.int64(d_end - d))
    if got == d_end - d:
        return 0
    return ERR_SHORT if got >= 0 else ERR_CORRUPT
