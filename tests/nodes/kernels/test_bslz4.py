"""Our bslz4 / lz4 decoders against the reference implementations, straight-to-sparse
against decode + dense pass (bit for bit), and corrupt input rejected cleanly."""

import io
import struct

import bitshuffle
import h5py
import hdf5plugin
import lz4.block
import numpy as np
import pytest

from nodes import Correct, Decode, DensePass, Normalise, Threshold, fuse
from nodes import decode as dec
from nodes.kernels import bslz4 as K
from nodes.kernels import lz4 as L
from stream.core.encoded import EncodedFrame, compress, default_block
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan

SHAPES = [(1, 1), (1, 7), (3, 5), (8, 8), (37, 53), (64, 64), (61, 130)]


def frame_of(rng, shape, dtype, spots=6):
    """Poisson background, a few bright blobs and hot pixels, in `dtype`."""
    img = rng.poisson(10, shape).astype(np.float64)
    top = 200 if np.dtype(dtype) == np.uint8 else 3000
    for _ in range(spots):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        img[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] += rng.uniform(30, top)
    img.flat[rng.integers(0, img.size, 3)] = np.iinfo(np.uint16).max
    if np.dtype(dtype) == np.uint32:
        img *= 60001  # values that float32 rounds
    if np.dtype(dtype) == np.uint8:
        img = np.minimum(img, 255)
    return img.astype(dtype)


def hdf5_chunk(frame, filt) -> bytes:
    """The frame as the HDF5 filter itself writes it (read back as a raw chunk)."""
    bio = io.BytesIO()
    with h5py.File(bio, "w") as f:
        f.create_dataset("d", data=frame[None], chunks=(1, *frame.shape), **filt)
        return f["d"].id.read_direct_chunk((0, 0, 0))[1]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int32", "float32"])
@pytest.mark.parametrize("block", [0, 8, 64, 136, 4096])
def test_bslz4_decoder_matches_reference(dtype, block):
    rng = np.random.default_rng(block)
    for shape in SHAPES:
        frame = frame_of(rng, shape, dtype)
        enc = compress(frame, "bslz4", block)
        out = dec.dense(enc)
        assert out.dtype == frame.dtype and out.tobytes() == frame.tobytes(), shape
        ref = bitshuffle.decompress_lz4(enc.data[12:], frame.shape, frame.dtype,
                                        block or default_block(frame.itemsize))
        assert ref.tobytes() == out.tobytes()


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_decoders_read_what_the_hdf5_filters_write(dtype):
    rng = np.random.default_rng(3)
    frame = frame_of(rng, (61, 130), dtype)
    for encoding, filt in (("bslz4", hdf5plugin.Bitshuffle(cname="lz4")),
                           ("lz4", hdf5plugin.LZ4(nbytes=1000))):
        enc = EncodedFrame.from_buffer(encoding, frame.shape, frame.dtype,
                                       hdf5_chunk(frame, filt))
        assert dec.dense(enc).tobytes() == frame.tobytes(), encoding


@pytest.mark.parametrize("block", [0, 1, 100, 4096, 1 << 20])
def test_lz4_decoder_matches_reference(block):
    rng = np.random.default_rng(block)
    for dtype in ("uint16", "uint32"):
        for shape in SHAPES:
            frame = frame_of(rng, shape, dtype)
            frame.flat[: frame.size // 2] = rng.integers(0, 2**16, frame.size // 2)  # noise
            enc = compress(frame, "lz4", block)
            assert dec.dense(enc).tobytes() == frame.tobytes(), (dtype, shape)
    data = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes() + bytes(3000)
    for n in (1, 17, 255, 256, 5000, 8000):  # the LZ4 block decoder alone
        packed = lz4.block.compress(data[:n], store_size=False)
        src = np.frombuffer(packed, np.uint8)
        out = np.zeros(n + 32, np.uint8)
        assert L.lz4_block(src, 0, src.size, out, 0, n) == 0
        assert out[:n].tobytes() == data[:n]



def test_lz4_block_copies_of_every_length_and_period():
    """Literal runs and matches of every length around the 8- and 32-byte copies, matches
    that overlap their source (periods 1 to 40) and far ones that do not: decoded as
    the reference compressor wrote them, into an output with no slack after it."""
    rng = np.random.default_rng(7)
    parts = []
    for n in range(100):
        parts.append(rng.integers(0, 256, n, dtype=np.uint8).tobytes())  # literals
        unit = rng.integers(0, 256, 1 + n % 40, dtype=np.uint8).tobytes()
        parts.append((unit * 400)[:4 + 3 * n])  # a match that repeats its own start
        parts.append(parts[-2] + parts[-1][:n])  # a far match, with no overlap
    data = b"".join(parts)
    for mode in ("default", "high_compression"):
        src = np.frombuffer(lz4.block.compress(data, mode=mode, store_size=False), np.uint8)
        out = np.zeros(len(data), np.uint8)
        assert L.lz4_block(src, 0, src.size, out, 0, len(data)) == 0, mode
        assert out.tobytes() == data, mode


def lz4_blocks(rng):
    """LZ4 blocks of the reference compressor (data of every kind) and garbage."""
    for n in (1, 5, 16, 64, 1000, 8192):
        for data in (rng.integers(0, 256, n, dtype=np.uint8).tobytes(), bytes(n),
                     (b"abc" * n)[:n], rng.poisson(3, n).astype(np.uint8).tobytes()):
            yield data, lz4.block.compress(data, store_size=False), True
    for _ in range(300):
        n = int(rng.integers(1, 300))
        yield (bytes(int(rng.integers(1, 600))), rng.integers(0, 256, n, np.uint8).tobytes(),
               False)


def test_the_bound_decoder_agrees_with_ours_and_stays_in_bounds():
    """decode_block (liblz4 where there is one) against lz4_block: the same bytes for every
    valid block, an error for a block that does not decode to exactly its size, and
    never a write past its output (the guard bytes after it stay)."""
    rng = np.random.default_rng(11)
    guard = 64
    valid = 0
    for data, packed, ok in lz4_blocks(rng):
        src = np.frombuffer(packed, np.uint8)
        n = len(data)
        ours = np.full(n + guard, 0xA5, np.uint8)
        bound = np.full(n + guard, 0xA5, np.uint8)
        a = L.lz4_block(src, 0, src.size, ours, 0, n)
        b = L.decode_block(src, 0, src.size, bound, 0, n)
        assert (bound[n:] == 0xA5).all()
        if ok:
            valid += 1
            assert a == b == 0 and bound[:n].tobytes() == ours[:n].tobytes() == data
        elif a == 0 and b == 0:
            assert bound[:n].tobytes() == ours[:n].tobytes()
        else:
            assert b < 0 or a < 0
    assert valid == 24
    assert L.DECODER.startswith(("liblz4", "numba"))


def test_the_fallback_decoder_keeps_liblz4s_contract():
    """Where there is no liblz4 the symbol is bound to lz4_block as a C callback: the
    decoded size or a negative number, exactly `capacity` bytes, nothing past them."""
    import ctypes

    import numba

    fallback = numba.cfunc(L._CSIG, nogil=True, cache=True)(L._lz4_decompress_numba)
    call = fallback.ctypes
    rng = np.random.default_rng(12)
    for data, packed, ok in lz4_blocks(rng):
        src = np.frombuffer(packed, np.uint8).copy()
        out = np.full(len(data) + 64, 0xA5, np.uint8)
        got = call(src.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                   out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), src.size, len(data))
        assert (out[len(data):] == 0xA5).all()
        assert got == len(data) if ok else (got == len(data) or got < 0)
        if ok:
            assert out[:len(data)].tobytes() == data

def scan_of(shape, dtype):
    return Scan.from_start(Start("t", {"eiger": DetectorInfo(shape, dtype)},
                                 counters=["monitor"]))


def chains(rng, shape, dtype):
    """Fused chains: correct (maps or scalars) + normalise + threshold (cut or cut map)."""
    scale = 60001.0 if dtype == "uint32" else 1.0
    mask = rng.random(shape) < 0.03
    mask[-1, -2:] = True  # masked pixels among the last size % 8, which bslz4 stores as they are
    flat = rng.uniform(0.8, 1.2, shape)
    dark = (rng.normal(2, 0.5, shape) * scale).astype(np.float32)
    cut = 40.0 * scale
    yield [Correct(dark=dark, flat=flat, mask=mask), Normalise(reference=1e4),
           Threshold(cut=cut)]
    yield [Correct(flat=flat, mask=mask), Normalise(reference=1e4),
           Threshold(cut_map=rng.uniform(0.9, 1.1, shape).astype(np.float32) * cut)]
    yield [Correct(dark=1.5 * scale, flat=0.9), Threshold(cut=cut)]
    yield [Normalise(reference=1e4), Threshold(cut=cut, max_pixels=40)]  # raised cut
    yield [Correct(dark=-5.0), Threshold(cut=0.0)]  # every pixel passes: no pre-cut


def results(chain, frame, monitor, encoded=None, straight=True):
    nodes = fuse(chain)
    for node in nodes:
        if isinstance(node, DensePass):
            node.straight_to_sparse = straight
    item = Item(0, "eiger", frame=frame if encoded is None else encoded,
                counters={"monitor": monitor})
    for node in nodes:
        item = node.process(item)
    sp = item.sparse
    return sp.row.tobytes(), sp.col.tobytes(), sp.intensity.tobytes(), item.flags


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int32"])
def test_straight_to_sparse_is_bit_identical(dtype):
    rng = np.random.default_rng(7)
    for shape in [(37, 53), (64, 64), (61, 130)]:
        for k, chain in enumerate(chains(rng, shape, dtype)):
            for node in fuse(chain):
                node.setup(scan_of(shape, dtype))
            frame = frame_of(rng, shape, dtype, spots=12)
            frame[-1, -5:] = frame.max()  # bright, partly masked, at the end of the frame
            monitor = float(rng.uniform(9000, 11000))
            raw = results(chain, frame, monitor)
            assert len(raw[0]) > 0, (shape, k)
            for block in (0, 64, 136):
                enc = compress(frame, "bslz4", block)
                assert results(chain, frame, monitor, enc) == raw, (shape, k, block)
                assert results(chain, frame, monitor, enc, straight=False) == raw
            assert results(chain, frame, monitor, compress(frame, "lz4", 1000)) == raw


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_threshold_and_unfused_chains_decode_too(dtype):
    rng = np.random.default_rng(11)
    shape = (61, 130)
    frame = frame_of(rng, shape, dtype, spots=12)
    for chain in ([Threshold(cut=40.0)], [Threshold(cut=40.0, max_pixels=30)],
                  [Normalise(reference=1e4), Correct(dark=2.0), Threshold(cut=40.0)]):
        nodes = fuse(chain)
        assert nodes[0].kind != "correct" and nodes[0].kind != "normalise"
        raw = results(chain, frame, 1.1e4)
        for encoding in ("bslz4", "lz4"):
            assert results(chain, frame, 1.1e4, compress(frame, encoding)) == raw, chain
    item = Decode().process(Item(0, "eiger", frame=compress(frame, "bslz4")))
    assert item.frame.tobytes() == frame.tobytes() and item.frame.flags.writeable


def corrupted(data: bytes, rng):
    """Truncations, flipped bytes, and garbled block size fields of a compressed frame."""
    for cut in sorted({12, 13, 16, 17, len(data) // 2, len(data) - 9, len(data) - 1}):
        yield data[:cut]
    yield data + b"\x00\x07"
    for _ in range(60):
        b = bytearray(data)
        for i in rng.integers(12, len(b), rng.integers(1, 4)):
            b[i] = rng.integers(0, 256)
        yield bytes(b)
    for value in (0, 1, 7, 2**31, 2**32 - 1):
        b = bytearray(data)
        b[12:16] = struct.pack(">I", value)
        yield bytes(b)


@pytest.mark.parametrize("encoding", ["bslz4", "lz4"])
def test_corrupt_frames_are_rejected_cleanly(encoding):
    rng = np.random.default_rng(5)
    shape = (37, 53)
    frame = frame_of(rng, shape, "uint16", spots=12)
    data = bytes(compress(frame, encoding, 256 if encoding == "bslz4" else 1024).buffer)
    chain = [Correct(flat=rng.uniform(0.8, 1.2, shape)), Threshold(cut=40.0)]
    dense_pass = fuse(chain)[0]
    dense_pass.setup(scan_of(shape, "uint16"))
    errors = 0
    for bad in corrupted(data, rng):
        try:
            enc = EncodedFrame.from_buffer(encoding, shape, frame.dtype, bad)
        except ValueError:
            errors += 1
            continue
        for straight in (True, False):
            dense_pass.straight_to_sparse = straight
            try:
                dense_pass.process(Item(0, "eiger", frame=enc))
            except ValueError as exc:
                assert f"{encoding} frame: block" in str(exc)
                errors += 1
    assert errors > 40


def test_kernels_stay_in_bounds_on_garbage():
    """Random input to every decoder: an error or a result, never a write past the output
    (guard bytes after it stay untouched)."""
    rng = np.random.default_rng(9)
    guard = 64
    for trial in range(300):
        n = int(rng.integers(12, 600))
        src = rng.integers(0, 256, n, dtype=np.uint8)
        if trial % 3 == 0:
            src[12:16] = np.frombuffer(struct.pack(">I", n - 16), np.uint8)
        size = int(rng.integers(8, 400)) // 8 * 8
        out_all = np.full(size * 2 + guard, 0xA5, np.uint8)
        scratch_all = np.full(8 * 64 + guard, 0xA5, np.uint8)
        scratch64 = scratch_all[:512].view(np.uint64)
        K.bslz4_dense(src, 64, 2, out_all[:size * 2], scratch_all[:512], scratch64)
        L.lz4_dense(src, int(rng.integers(1, 300)), out_all[:size * 2])
        assert (out_all[size * 2:] == 0xA5).all() and (scratch_all[512:] == 0xA5).all()
        assert L.lz4_block(src, 0, n, out_all[:size * 2], 0, size * 2) <= 0
        assert (out_all[size * 2:] == 0xA5).all()


@pytest.mark.parametrize("encoding", ["bslz4", "lz4"])
def test_a_received_frame_compiles_nothing_the_warm_up_did_not(encoding):
    """The warm-up feeds bytes; a frame from a socket lies in ZeroMQ's writable buffer.
    Both are handed to the kernels read-only, so a frame received after the warm-up
    runs the kernels it compiled (before: the first scan compiled them again)."""
    import zmq

    rng = np.random.default_rng(3)
    shape, dtype = (64, 64), "uint16"
    chain = [Correct(dark=1.5, flat=0.9), Threshold(cut=40.0)]
    for node in fuse(chain):
        node.setup(scan_of(shape, dtype))
    frame = frame_of(rng, shape, dtype, spots=6)
    enc = compress(frame, encoding, 1000 if encoding == "lz4" else 0)
    as_bytes = EncodedFrame.from_buffer(encoding, shape, frame.dtype, bytes(enc.buffer))
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        port = b.bind_to_random_port("tcp://127.0.0.1")
        a.connect(f"tcp://127.0.0.1:{port}")
        a.send(bytes(enc.buffer))
        received = b.recv(copy=False)
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()
    assert not memoryview(received.buffer).readonly  # the kind that differed
    from_socket = EncodedFrame.from_buffer(encoding, shape, frame.dtype, received.buffer)
    assert not from_socket.data.flags.writeable
    kernels = [K.bslz4_correct_threshold, L.lz4_block, L.lz4_dense, L.next_block]
    want = results(chain, frame, 1e4, as_bytes)
    compiled = [len(k.signatures) for k in kernels]
    assert results(chain, frame, 1e4, from_socket) == want
    assert [len(k.signatures) for k in kernels] == compiled


DECODE_ONE = """
import ctypes, sys
if sys.argv[1] == "hide":  # a system without liblz4
    real = ctypes.CDLL
    def cdll(name, *a, **k):
        if name and "lz4" in str(name):
            raise OSError("no liblz4 here")
        return real(name, *a, **k)
    ctypes.CDLL = cdll
import numpy as np
from nodes import decode as dec
from nodes.kernels import lz4 as L
from stream.core.encoded import compress
frame = np.random.default_rng(3).poisson(10, (300, 200)).astype(np.uint16)
frame[5:9, 7:12] += 2000
assert dec.dense(compress(frame, "bslz4", 0)).tobytes() == frame.tobytes()
assert dec.dense(compress(frame, "lz4", 1024)).tobytes() == frame.tobytes()
print(L.DECODER)
"""


@pytest.mark.system
def test_kernels_cached_with_liblz4_run_without_it(tmp_path):
    """Kernels compiled where liblz4 is, loaded from the same cache where it is not: the
    symbol they call is bound to our decoder instead, and frames decode the same."""
    import os
    import subprocess
    import sys

    from tests.support.paths import ROOT

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    said = [subprocess.run([sys.executable, "-c", DECODE_ONE, how], env=env, cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
            for how in ("find", "hide")]
    assert said == [L.DECODER, "numba"]  # (this machine's decoder first: liblz4 on Debian)
