"""Wire encoding: round trips, zero-copy frames, and a clear reason for every bad field."""

import msgpack
import numpy as np
import pytest

from stream.core.messages import DetectorInfo, End, FrameRef, MessageError, Point, Start
from stream.wire.codec import decode, encode


def start(**kw):
    base = dict(scan_id="s1", detectors={"eiger": DetectorInfo((4, 5), "uint16")},
                motors=["omega"], counters=["monitor"], npoints=3,
                trajectory={"kind": "sweep", "fast": "omega"}, meta={"energy": 43.5})
    base.update(kw)
    return Start(**base)


def point_parts(**header):
    frame = np.arange(20, dtype=np.uint16).reshape(4, 5)
    h = {"type": "point", "scan_id": "s1", "point_id": 0, "time": 1.0,
         "motors": {"omega": 0.5}, "counters": {"monitor": 1e4},
         "frames": {"eiger": {"part": 1, "shape": [4, 5], "dtype": "uint16", "encoding": "raw"}}}
    h.update(header)
    return [msgpack.packb(h), frame.tobytes()]


def test_start_and_end_round_trip():
    s = start()
    assert decode(encode(s)) == s
    e = End("s1", "abort", 7, "operator")
    assert decode(encode(e)) == e


def test_point_round_trip_is_zero_copy_and_exact():
    frame = np.random.default_rng(0).integers(0, 60000, (4, 5), dtype=np.uint16)
    p = Point("s1", 2, 3.5, {"omega": 1.0}, {"monitor": 2.0}, {"eiger": frame}, {"note": "x"})
    parts = [bytes(x) for x in encode(p)]
    q = decode(parts)
    assert isinstance(q, Point) and q.point_id == 2 and q.extra == {"note": "x"}
    np.testing.assert_array_equal(q.frames["eiger"], frame)
    assert q.frames["eiger"].dtype == np.uint16
    assert not q.frames["eiger"].flags.owndata  # a view on the received buffer


def test_frame_reference_round_trip():
    p = Point("s1", 0, 0.0, frames={"eiger": FrameRef("a.h5", "/1.1/measurement/eiger", 17)})
    q = decode(encode(p))
    assert q.frames["eiger"] == FrameRef("a.h5", "/1.1/measurement/eiger", 17)


@pytest.mark.parametrize("parts, reason", [
    ([b"\xc1\xc1"], "not msgpack"),
    ([msgpack.packb([1, 2])], "not a map"),
    ([msgpack.packb({"type": "hello"})], "unknown message type"),
    ([msgpack.packb({"type": "end", "scan_id": "s1"})], "missing key 'status'"),
    ([msgpack.packb({"type": "end", "scan_id": "s1", "status": "great"})], "status 'great'"),
    ([msgpack.packb({"type": "start", "protocol": 2, "scan_id": "s", "detectors": {}})],
     "protocol 2"),
    ([msgpack.packb({"type": "start", "protocol": 1, "scan_id": "s",
                     "detectors": {"d": {"shape": [0, 3], "dtype": "uint16"}}})], "shape"),
    ([msgpack.packb({"type": "start", "protocol": 1, "scan_id": "s",
                     "detectors": {"d": {"shape": [2, 3], "dtype": "complex64"}}})], "dtype"),
    ([msgpack.packb({"type": "start", "protocol": 1, "scan_id": "s",
                     "detectors": {"d": {"shape": [2, 3], "dtype": "uint8"}},
                     "trajectory": {"kind": "spiral"}})], "trajectory kind"),
    (point_parts(point_id="3"), "'point_id' must be int"),
    (point_parts(point_id=-1), r"point_id must be 0..2\*\*63-1"),
    (point_parts(point_id=2**63), r"point_id must be 0..2\*\*63-1, got 9223372036854775808"),
    (point_parts(motors={b"omega": 0.5}), "motors names must be strings, got b'omega'"),
    (point_parts(frames={"eiger": {"part": 1, "shape": [4, 5], "dtype": "uint16",
                                   "encoding": "zip"}}), "unknown encoding 'zip'"),
    (point_parts(frames={"eiger": {"part": 1, "shape": [4, 5], "dtype": "uint16",
                                   "encoding": "bslz4"}}), "bslz4 header says"),
    (point_parts(frames={"eiger": {"part": 2, "shape": [4, 5], "dtype": "uint16"}}),
     "does not name 1 of the 1 buffer parts"),
    (point_parts(frames={"eiger": {"part": 1, "shape": [5, 5], "dtype": "uint16"}}),
     "buffer has 40 bytes"),
])
def test_malformed_messages_say_why(parts, reason):
    with pytest.raises(MessageError, match=reason):
        decode(parts)


def test_a_value_that_is_not_a_number_is_nan_and_flagged():
    p = decode(point_parts(motors={"omega": "fast"}, counters={"monitor": None}, flags=["x"]))
    assert np.isnan(p.motors["omega"]) and np.isnan(p.counters["monitor"])
    assert p.extra["flags"] == ["x", "motor 'omega' = 'fast' is not a number: taken as NaN",
                                "counter 'monitor' = None is not a number: taken as NaN"]
    assert "flags" not in decode(point_parts()).extra


def test_frame_bigger_than_maximum_is_refused():
    with pytest.raises(MessageError, match="more than the configured maximum"):
        decode(point_parts(), max_frame_bytes=39)
    assert decode(point_parts(), max_frame_bytes=40).point_id == 0


def sparse_frame():
    from stream.core.item import SparseFrame

    return SparseFrame((4, 5), np.array([0, 0, 3], np.uint16), np.array([1, 4, 2], np.uint16),
                       np.array([5.0, 6.5, 7.0], np.float32))


def test_sparse_frame_round_trip():
    p = Point("s1", 1, 0.0, frames={"eiger": sparse_frame()}, extra={"error": "x"})
    q = decode([bytes(x) for x in encode(p)])
    f = q.frames["eiger"]
    assert f.shape == (4, 5) and f.nnz == 3 and q.extra["error"] == "x"
    np.testing.assert_array_equal(f.col, [1, 4, 2])
    np.testing.assert_array_equal(f.intensity, np.float32([5.0, 6.5, 7.0]))


@pytest.mark.parametrize("change, reason", [
    (lambda h, parts: parts.__setitem__(2, parts[2][:-2]), "sparse col has 4 bytes"),
    (lambda h, parts: h["frames"]["eiger"].__setitem__("nnz", 99), "nnz 99"),
    (lambda h, parts: parts.__setitem__(1, np.uint16([0, 0, 9]).tobytes()), "outside the frame"),
    (lambda h, parts: parts.__setitem__(2, np.uint16([4, 1, 2]).tobytes()), "not raster-sorted"),
    (lambda h, parts: parts.pop(), "does not name 3 of the 2 buffer parts"),
])
def test_bad_sparse_frames_say_why(change, reason):
    parts = [bytes(x) for x in encode(Point("s1", 1, 0.0, frames={"eiger": sparse_frame()}))]
    h = msgpack.unpackb(parts[0])
    change(h, parts)
    parts[0] = msgpack.packb(h)
    with pytest.raises(MessageError, match=reason):
        decode(parts)


@pytest.mark.parametrize("header, words", [
    (b"\xc1garbage", "FormatError"),  # 0xc1: never used by msgpack
    (b"\x91" * 200000 + b"\x00", "StackError"),  # arrays nested too deep
])
def test_a_header_that_is_not_msgpack_says_why_even_without_a_message(header, words):
    with pytest.raises(MessageError) as err:
        decode([header])
    assert str(err.value).startswith(f"header is not msgpack: {words}"), str(err.value)
