"""SIMPLON stream v1 ("legacy" multipart JSON): captured messages written from the
documented field lists, series from the emulator over real sockets, and the same
cliques as replaying the frames."""

from __future__ import annotations

import json
import re
import struct

import bitshuffle
import h5py
import lz4.block
import numpy as np
import pytest

from stream.core.encoded import EncodedFrame
from stream.sources.dectris import (
    DectrisSource,
    DetectorError,
    SeriesEnd,
    SeriesImage,
    SeriesStart,
    decode_v1,
)
from tests.support.dectris import (
    SIM,
    TRAJECTORY,
    as_dense,
    assert_same_cliques,
    collect,
    decoded,
    emulator_and_source,
    first_start,
    kinds,
    live_tables,
    replay_tables,
    run_emulator_cli,
    send_in_thread,
    sim_scan,
)

X, Y = 5, 3  # x (fast, columns), y (slow, rows): numpy shape (Y, X)
CONFIG = (b'{"beam_center_x": 2.5, "beam_center_y": 1.5, "bit_depth_image": 16, '
          b'"count_time": 0.01, "countrate_correction_applied": true, '
          b'"data_collection_date": "2026-03-01T10:00:00.000+01:00", '
          b'"description": "Dectris EIGER2 CdTe 4M", "detector_distance": 0.15, '
          b'"flatfield_correction_applied": false, "frame_time": 0.0125, '
          b'"nimages": 360, "ntrigger": 4, "omega_increment": 0.25, "omega_start": -90.0, '
          b'"photon_energy": 43500.0, "pixel_mask_applied": true, "roi_mode": "disabled", '
          b'"sensor_material": "CdTe", "threshold_energy": 21750.0, '
          b'"x_pixels_in_detector": 5, "y_pixels_in_detector": 3}')


def header(detail: str) -> bytes:
    return b'{"htype": "dheader-1.0", "series": 12, "header_detail": "%s"}' % detail.encode()


FLAT = np.linspace(0.9, 1.1, X * Y, dtype="<f4").reshape(Y, X)
MASK = np.zeros((Y, X), "<u4")
MASK[0, 4], MASK[2, 0] = 1, 8  # fast index 4 of the first row; first pixel of the last row
TABLE = np.linspace(0, 1, 20, dtype="<f4")


def all_parts() -> list[bytes]:
    return [header("all"), CONFIG,
            b'{"htype": "dflatfield-1.0", "shape": [5, 3], "type": "float32"}', FLAT.tobytes(),
            b'{"htype": "dpixelmask-1.0", "shape": [5, 3], "type": "uint32"}', MASK.tobytes(),
            b'{"htype": "dcountrate_table-1.0", "shape": [20, 1], "type": "float32"}',
            TABLE.tobytes()]


# ------------------------------------------------------------------ captured bytes


def test_header_detail_none():
    msg = decode_v1([header("none")])
    assert isinstance(msg, SeriesStart) and msg.series_id == 12 and msg.unique_id is None
    assert msg.shape is None and msg.dtype is None and msg.npoints is None
    assert msg.meta["header_detail"] == "none" and not msg.flatfield


def test_header_detail_basic_with_appendix():
    msg = decode_v1([header("basic"), CONFIG, b'{"user": "ops", "sample": "Si"}'])
    assert msg.shape == (Y, X) and msg.dtype == "uint16"
    assert msg.npoints == 360 * 4  # nimages x ntrigger
    assert msg.flatfield_applied is False and msg.meta["pixel_mask_applied"] is True
    assert msg.meta["photon_energy"] == 43500.0 and msg.meta["omega_increment"] == 0.25
    assert msg.meta["header_appendix"] == {"user": "ops", "sample": "Si"}


def test_header_detail_all_maps_are_y_by_x():
    msg = decode_v1(all_parts())
    np.testing.assert_array_equal(msg.flatfield[""], FLAT)
    mask = msg.pixel_mask[""]
    assert mask.shape == (Y, X) and mask[0, 4] == 1 and mask[2, 0] == 8 and mask.sum() == 9
    assert msg.meta["countrate_table_shape"] == [1, 20]


def image_parts(data: bytes, encoding: str, dtype: str = "uint16", size: int | None = None,
                frame: int = 3, shape=(X, Y)) -> list[bytes]:
    return [b'{"htype": "dimage-1.0", "series": 12, "frame": %d, '
            b'"hash": "fc67f000d08fe6b380ea9434b8362d22"}' % frame,
            json.dumps({"htype": "dimage_d-1.0", "shape": list(shape), "type": dtype,
                        "encoding": encoding,
                        "size": len(data) if size is None else size}).encode(),
            data,
            b'{"htype": "dconfig-1.0", "start_time": 30000000, "stop_time": 39000000, '
            b'"real_time": 9000000}']


def hdf5_bslz4(arr: np.ndarray) -> bytes:
    """An Eiger HDF5 chunk: 12-byte header, then the bitshuffle + LZ4 blocks."""
    block = 8192 // arr.itemsize
    return (struct.pack(">QI", arr.nbytes, block * arr.itemsize)
            + bitshuffle.compress_lz4(arr.reshape(-1), block).tobytes())


@pytest.mark.parametrize("dtype, encoding", [
    ("uint16", "<"), ("uint32", "<"), ("uint16", "lz4<"), ("uint32", "lz4<"),
    ("uint8", "bs8-lz4<"), ("uint16", "bs16-lz4<"), ("uint32", "bs32-lz4<")])
def test_image_encodings(dtype, encoding):
    frame = (np.arange(X * Y) * 37 % 251).astype(dtype).reshape(Y, X)
    if encoding == "<":
        data = frame.tobytes()
    elif encoding == "lz4<":
        data = lz4.block.compress(frame.tobytes(), store_size=False)
    else:
        data = hdf5_bslz4(frame)
    msg = decode_v1(image_parts(data, encoding, dtype))
    assert isinstance(msg, SeriesImage) and (msg.series_id, msg.image_id) == (12, 3)
    assert msg.times == pytest.approx({"start_time": 0.03, "stop_time": 0.039,
                                       "real_time": 0.009})
    got = msg.frames[""]
    assert isinstance(got, EncodedFrame) == (encoding != "<")
    assert got.shape == (Y, X) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(as_dense(got), frame)


def test_shape_is_fast_axis_first():
    """Row 1 starts X pixels into the data: [x, y] = [5, 3] is a (3, 5) frame."""
    data = np.zeros(X * Y, "<u2")
    data[X] = 7  # the first pixel of the second row
    got = decode_v1(image_parts(data.tobytes(), "<")).frames[""]
    assert got.shape == (Y, X) and got[1, 0] == 7 and got.sum() == 7


def test_end_and_big_endian_raw():
    assert decode_v1([b'{"htype": "dseries_end-1.0", "series": 12}']) == SeriesEnd(12)
    frame = np.arange(X * Y, dtype=">u2").reshape(Y, X)
    got = decode_v1(image_parts(frame.tobytes(), ">")).frames[""]
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, frame)


RAW = np.zeros((Y, X), "<u2").tobytes()


@pytest.mark.parametrize("parts, reason", [
    ([b"\x00\x01 not json"], "not JSON"),
    ([b'[1, 2]'], "not a map"),
    ([b'{"htype": "dimage_d-1.0", "shape": [5, 3]}'], "unknown htype"),
    ([header("all"), CONFIG, b"{}"], "3 parts, expected 8"),
    ([header("basic")], "1 parts, expected 2"),
    ([b'{"htype": "dheader-1.0", "series": 1, "header_detail": "most"}'], "header_detail"),
    ([header("all"), CONFIG, *all_parts()[2:4], *all_parts()[2:4], *all_parts()[6:]],
     "a second time"),
    (image_parts(RAW, "<")[:3], "3 parts"),
    (image_parts(RAW, "<", size=99), "says 99 bytes"),
    (image_parts(RAW[:-2], "<"), "bytes of pixels"),
    (image_parts(RAW, "bs16<"), "encoding 'bs16<'"),
    (image_parts(RAW, "zip<"), "encoding 'zip<'"),
    (image_parts(hdf5_bslz4(np.zeros((Y, X), np.uint16)), "bs32-lz4<"), "element size 4"),
    (image_parts(RAW, "<", dtype="complex64"), "pixel type"),
    (image_parts(RAW, "<", shape=[5]), "shape must be"),
    (image_parts(b"\x00" * 40, "bs16-lz4<"), "header says 0 bytes"),
    ([b'{"htype": "dseries_end-1.0", "series": -1}'], "non-negative"),
])
def test_malformed_messages_say_why(parts, reason):
    with pytest.raises(DetectorError, match=reason):
        decode_v1(parts)


def test_corrupt_bare_lz4_that_fills_the_frame_is_refused():
    """A bare block as long as the frame would read as stored under the HDF5 framing:
    it is decoded on arrival, and a corrupt one refused there."""
    with pytest.raises(DetectorError, match="corrupt lz4"):
        decode_v1(image_parts(b"\xff" * len(RAW), "lz4<"))


# ------------------------------------------------------------------ over sockets


@pytest.mark.parametrize("encoding", ["raw", "lz4", "bslz4"])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
@pytest.mark.parametrize("detail", ["none", "basic", "all"])
def test_series_frames_arrive_exactly(encoding, dtype, detail):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 4000, (24, 40)).astype(dtype) for _ in range(5)]
    motors = [{"omega": 1.0 + i} for i in range(5)]
    flat = {"threshold_1": np.full((24, 40), 1.25, np.float32)}
    with emulator_and_source(1, encoding, detail, motors=["omega"],
                             join_timeout=5.0) as (emu, src):
        sender = send_in_thread(emu, frames, series_id=7, motors=motors, flatfield=flat)
        msgs = decoded(collect(src))
        sender.join(10)
    assert kinds(msgs) == ["Start"] + ["Point"] * 5 + ["End"]
    start = first_start(msgs)
    # named after the detector's description when the header says it (basic, all)
    name = "eiger" if detail == "none" else "eiger2_si_4m"
    assert list(start.detectors) == [name]
    info = start.detectors[name]
    assert start.scan_id == "series-7" and info.shape == (24, 40) and info.dtype == dtype
    assert start.npoints == (None if detail == "none" else 5)
    assert start.meta["header_detail"] == detail and start.meta["stream"] == "v1"
    assert (info.flatfield is not None) == (detail == "all")
    if detail == "all":
        np.testing.assert_array_equal(info.flatfield, flat["threshold_1"])
        assert info.pixel_mask is not None and not info.pixel_mask.any()
    for p in msgs[1:-1]:
        np.testing.assert_array_equal(as_dense(p.frames[name]), frames[p.point_id])
        assert p.motors == motors[p.point_id]
    assert msgs[-1].status == "success" and msgs[-1].npoints == 5


def test_same_cliques_as_replaying_the_hdf5_stack(tmp_path):
    frames, motors, counters = sim_scan("uint32")
    reference = replay_tables(tmp_path, frames, motors, counters)
    with emulator_and_source(1, "lz4", "all", motors=["omega"], counters=["monitor"],
                             trajectory=TRAJECTORY, join_timeout=10.0) as (emu, src):
        sender = send_in_thread(emu, frames, series_id=3, motors=motors, counters=counters)
        messages = collect(src)
        sender.join(10)
    live, result = live_tables(tmp_path, messages)
    assert result["status"] == "success" and result["processed"] == SIM.npoints
    assert_same_cliques(live, reference)


@pytest.mark.system
def test_emulator_command_line_replays_an_hdf5_stack(tmp_path):
    stack = np.random.default_rng(2).integers(0, 500, (4, 20, 30)).astype(np.uint32)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["/1.1/measurement/eiger"] = stack
    cmd = ["--version", "1", "--encoding", "bslz4", "--dtype", "uint32", "--header-detail",
           "all", "--series-id", "11", "--hdf5",
           f"{tmp_path / 'scan.h5'}::/1.1/measurement/eiger", "--wait", "0.5"]

    def receive(first: str) -> list:
        m = re.search(r"stream v1, on (tcp://\S+)", first)
        assert m, first
        with DectrisSource(endpoint=m.group(1), version=1) as src:
            return decoded(collect(src))

    msgs, _, out, err, code = run_emulator_cli(cmd, receive)
    assert code == 0 and "series 11: 4 images" in out, err
    assert kinds(msgs) == ["Start"] + ["Point"] * 4 + ["End"]
    assert first_start(msgs).scan_id == "series-11"
    (name,) = first_start(msgs).detectors
    for p in msgs[1:-1]:
        assert isinstance(p.frames[name], EncodedFrame)
        np.testing.assert_array_equal(as_dense(p.frames[name]), stack[p.point_id])
