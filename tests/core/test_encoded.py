"""Compressed frames on the wire: header checks on receipt, zero-copy, sent on as they
are; and the same scan sent raw and bslz4 / lz4 into `peakstream run` gives the same
cliques."""

import pickle
import struct

import h5py
import msgpack
import numpy as np
import pytest

from stream.core.encoded import EncodedFrame, compress
from stream.core.messages import MessageError, Point
from stream.wire.codec import decode, encode
from tests.support.paths import CONFIGS
from tests.support.processes import simulate_send

FRAME = np.random.default_rng(0).poisson(10, (40, 52)).astype(np.uint16)


def parts_of(data: bytes, encoding="bslz4", shape=(40, 52), dtype="uint16"):
    h = {"type": "point", "scan_id": "s1", "point_id": 0, "time": 1.0,
         "frames": {"eiger": {"part": 1, "shape": list(shape), "dtype": dtype,
                              "encoding": encoding}}}
    return [msgpack.packb(h), data]


@pytest.mark.parametrize("encoding", ["bslz4", "lz4"])
def test_compressed_frame_stays_compressed_and_zero_copy(encoding):
    enc = compress(FRAME, encoding)
    parts = [bytes(p) for p in encode(Point("s1", 0, 1.0, frames={"eiger": enc}))]
    q = decode(parts)
    got = q.frames["eiger"]
    assert isinstance(got, EncodedFrame) and got.encoding == encoding
    assert got.shape == FRAME.shape and got.dtype == FRAME.dtype and got.nbytes == FRAME.nbytes
    assert got.buffer.obj is parts[1]  # a view of the received part, not a copy
    again = decode([bytes(p) for p in encode(q)])  # sent on as it came
    assert bytes(again.frames["eiger"].buffer) == bytes(enc.buffer)
    clone = pickle.loads(pickle.dumps(got))
    assert bytes(clone.buffer) == bytes(got.buffer) and clone.block == got.block


def bslz4_header(total=FRAME.nbytes, block=8192):
    return struct.pack(">QI", total, block)


@pytest.mark.parametrize("data, encoding, reason", [
    (b"\x00" * 5, "bslz4", "shorter than its 12-byte header"),
    (bslz4_header(total=100) + bytes(20), "bslz4", "header says 100 bytes"),
    (bslz4_header(block=8190) + bytes(20), "bslz4", "not a whole number of 8 elements"),
    (bslz4_header() + bytes(4), "bslz4", "its blocks need"),
    (bslz4_header() + bytes(10**6), "bslz4", "its blocks need"),
    (bslz4_header(block=0) + bytes(4), "lz4", "block size of 0"),
    (bslz4_header(block=100) + bytes(8), "lz4", "its blocks need"),
])
def test_bad_headers_say_why(data, encoding, reason):
    with pytest.raises(MessageError, match=reason):
        decode(parts_of(data, encoding))


def test_block_size_zero_means_bitshuffle_default():
    enc = compress(FRAME, "bslz4")
    data = bytearray(enc.buffer)
    data[8:12] = bytes(4)  # the header may say 0: 8192 bytes
    assert decode(parts_of(bytes(data))).frames["eiger"].block == 4096


def test_unknown_encoding_still_rejected():
    with pytest.raises(MessageError, match="unknown encoding 'zstd'"):
        decode(parts_of(bytes(compress(FRAME, "bslz4").buffer), "zstd"))


def test_decoded_size_counts_against_max_frame_bytes():
    parts = parts_of(bytes(compress(FRAME, "bslz4").buffer))
    with pytest.raises(MessageError, match="more than the configured maximum"):
        decode(parts, max_frame_bytes=FRAME.nbytes - 1)


def tables(path):
    """Every dataset under the detector group (sparse pixels, 2D peaks, overlaps, cliques)."""
    out = {}
    with h5py.File(path, "r") as f:
        det = f["entry/eiger"]
        det.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                       if isinstance(obj, h5py.Dataset) else None)
        status = f["entry"].attrs["status"]
        bad = int((f["entry/points/status"][()] != 0).sum())
    return out, status, bad


@pytest.mark.system
def test_raw_and_compressed_scans_give_identical_cliques(run_process, tmp_path):
    sim = ["--points", "40", "--shape", "256", "240", "--spots", "24", "--seed", "4"]
    for encoding in ("raw", "bslz4", "lz4"):  # one scan at a time: senders would interleave
        proc = run_process(CONFIGS / "simulated.toml", "--scans", "1")
        sent = simulate_send(proc.endpoint, *sim, "--scan-id", f"sim-{encoding}",
                             "--encoding", encoding)
        assert sent.returncode == 0, sent.stderr
        code, out, err = proc.wait()
        assert code == 0, err
    raw, status, bad = tables(tmp_path / "out" / "sim-raw.h5")
    assert status == "success" and bad == 0 and raw["cliques/clique_id"].size > 10
    for encoding in ("bslz4", "lz4"):
        got, status, bad = tables(tmp_path / "out" / f"sim-{encoding}.h5")
        assert status == "success" and bad == 0
        assert got.keys() == raw.keys()
        for name, column in raw.items():
            assert got[name].dtype == column.dtype, name
            assert got[name].tobytes() == column.tobytes(), (encoding, name)


def test_corrupt_frame_makes_a_bad_point_not_a_crash(tmp_path):
    from stream.config.schema import Config
    from stream.core.messages import End
    from stream.run.runner import ScanRunner
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig

    sim = Simulation(SimConfig(npoints=6, shape=(128, 160), spots=0, seed=1))
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=tmp_path / "c.h5")
    runner.handle(encode(sim.start("c")))
    for i in range(6):
        point = sim.point(i, "c")
        enc = compress(point.frames["eiger"], "bslz4", 64)
        if i == 3:  # garble the body after the header: only the chain can see it
            data = bytearray(enc.buffer)
            data[40:60] = bytes(range(200, 220))
            enc = EncodedFrame.from_buffer("bslz4", enc.shape, enc.dtype, bytes(data))
        point.frames["eiger"] = enc
        runner.handle(encode(point))
    runner.handle(encode(End("c", "success", 6)))
    runner.close()
    assert runner.results[0]["status"] == "incomplete" and runner.results[0]["bad"] == 1
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert list(f["entry/points/status"][()]) == [0, 0, 0, 2, 0, 0]
        messages = [m.decode() for m in f["entry/process/events/message"][()]]
    assert any("bslz4 frame: block" in m for m in messages), messages
