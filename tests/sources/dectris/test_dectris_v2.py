"""SIMPLON stream v2 (CBOR): captured bytes built from the DECTRIS field lists, series
from the emulator over real sockets, and the same cliques as replaying the frames."""

from __future__ import annotations

import datetime as dt
import struct

import bitshuffle
import cbor2
import numpy as np
import pytest

from stream.core.encoded import EncodedFrame
from stream.core.messages import End, Point, Start
from stream.sources.dectris import DetectorError, SeriesEnd, SeriesImage, SeriesStart, decode_v2
from tests.support.dectris import (
    FALSE,
    SIM,
    TRAJECTORY,
    TRUE,
    array,
    as_dense,
    assert_same_cliques,
    bstr,
    cmap,
    cmap_items,
    collect,
    compressed,
    decoded,
    emulator_and_source,
    f64,
    first_start,
    kinds,
    live_tables,
    replay_tables,
    self_described,
    send_in_thread,
    sim_scan,
    tag,
    text,
    typed,
    uint,
)

SHAPE = (3, 5)  # rows (image_size_y), cols (image_size_x)


def bslz4_bytes(arr: np.ndarray, block: int = 0) -> bytes:
    """The HDF5 bitshuffle filter framing, built from bitshuffle itself."""
    body = bitshuffle.compress_lz4(arr.reshape(-1), block).tobytes()
    block = block or 8192 // arr.itemsize
    return struct.pack(">QI", arr.nbytes, block * arr.itemsize) + body


# ------------------------------------------------------------------ captured bytes


def test_start_message_with_every_documented_field():
    flat = np.linspace(0.9, 1.1, 15, dtype=np.float32).reshape(SHAPE)
    mask = np.zeros(SHAPE, np.uint32)
    mask[0, 4], mask[2, 1] = 1, 16  # a gap pixel, a noisy one
    lut = np.arange(8, dtype=np.uint32)
    fields = {
        "type": text("start"),
        "arm_date": tag(0, text("2026-03-01T10:00:00+00:00")),
        "beam_center_x": f64(2.5), "beam_center_y": f64(1.5),
        "channels": array(text("threshold_1")),
        "count_time": f64(0.01),
        "countrate_correction_enabled": FALSE,
        "countrate_correction_lookup_table": tag(70, bstr(lut.astype("<u4").tobytes())),
        "detector_description": text("Dectris EIGER2 Si 4M"),
        "detector_serial_number": text("E-32-0123"),
        "detector_translation": array(f64(0.0), f64(0.0), f64(0.15)),
        "flatfield": cmap_items({"threshold_1": typed(85, flat, "<f4")}),
        "flatfield_enabled": FALSE,
        "frame_time": f64(0.0125),
        "goniometer": cmap(omega=cmap(increment=f64(0.25), start=f64(-90.0))),
        "image_size_x": uint(5), "image_size_y": uint(3),
        "incident_energy": f64(43500.0), "incident_wavelength": f64(0.285),
        "number_of_images": uint(1440),
        "pixel_mask": cmap_items({"threshold_1": typed(70, mask, "<u4")}),
        "pixel_mask_enabled": TRUE,
        "pixel_size_x": f64(75e-6), "pixel_size_y": f64(75e-6),
        "saturation_value": uint(65534),
        "sensor_material": text("CdTe"), "sensor_thickness": f64(7.5e-4),
        "series_id": uint(17), "series_unique_id": text("01HV-17"),
        "threshold_energy": cmap_items({"threshold_1": f64(21750.0)}),
        "user_data": cmap(sample=text("Si"), scan=uint(3)),
        "virtual_pixel_interpolation_enabled": FALSE,
    }
    msg = decode_v2([self_described(cmap_items(fields))])
    assert isinstance(msg, SeriesStart)
    assert (msg.series_id, msg.unique_id, msg.channels) == (17, "01HV-17", ["threshold_1"])
    assert msg.shape == SHAPE and msg.npoints == 1440 and msg.dtype is None
    np.testing.assert_array_equal(msg.flatfield["threshold_1"], flat)
    np.testing.assert_array_equal(msg.pixel_mask["threshold_1"], mask)
    assert msg.pixel_mask["threshold_1"].dtype == np.uint32
    assert msg.flatfield_applied is False and msg.meta["pixel_mask_applied"] is True
    assert msg.meta["incident_energy"] == 43500.0 and msg.meta["frame_time"] == 0.0125
    assert msg.meta["goniometer"] == {"omega": {"increment": 0.25, "start": -90.0}}
    assert msg.meta["threshold_energy"] == {"threshold_1": 21750.0}
    assert msg.meta["user_data"] == {"sample": "Si", "scan": 3}
    assert msg.meta["arm_date"].startswith("2026-03-01T10:00:00")
    assert "countrate_correction_lookup_table" not in msg.meta  # arrays stay out of meta


def test_image_message_two_channels_raw_and_bslz4():
    rng = np.random.default_rng(1)
    t1 = rng.integers(0, 60000, SHAPE).astype(np.uint16)
    t2 = rng.integers(0, 2**31, SHAPE).astype(np.uint32)
    fields = {
        "type": text("image"), "series_id": uint(17), "series_unique_id": text("01HV-17"),
        "image_id": uint(42),
        "real_time": array(uint(99), uint(10000)),
        "series_date": tag(0, text("2026-03-01T10:00:00+00:00")),
        "start_time": array(uint(4200), uint(10000)),
        "stop_time": array(uint(4299), uint(10000)),
        "user_data": text("x"),
        "data": cmap_items({"threshold_1": typed(69, t1, "<u2"),
                            "threshold_2": compressed(70, SHAPE, "bslz4", 4,
                                                      bslz4_bytes(t2))}),
    }
    msg = decode_v2([self_described(cmap_items(fields))])
    assert isinstance(msg, SeriesImage)
    assert (msg.series_id, msg.unique_id, msg.image_id) == (17, "01HV-17", 42)
    assert msg.times == {"real_time": 0.0099, "start_time": 0.42, "stop_time": 0.4299}
    epoch = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()
    assert msg.time == pytest.approx(epoch + 0.42)
    np.testing.assert_array_equal(msg.frames["threshold_1"], t1)
    assert msg.frames["threshold_1"].dtype == np.uint16
    frame = msg.frames["threshold_2"]
    assert isinstance(frame, EncodedFrame) and frame.encoding == "bslz4"  # still compressed
    assert frame.dtype == np.uint32 and frame.shape == SHAPE
    np.testing.assert_array_equal(as_dense(frame), t2)


# A literal vector: image 7 of series 3, one channel of 2 x 3 uint16 (0..5), raw.
LITERAL_IMAGE = bytes.fromhex(
    "d9d9f7a4"
    "6474797065" "65696d616765"                                  # "type": "image"
    "69736572696573" "5f6964" "03"                               # "series_id": 3
    "68696d6167655f6964" "07"                                    # "image_id": 7
    "6464617461" "a1" "6b7468726573686f6c645f31"                 # "data": {"threshold_1":
    "d828" "82" "820203" "d845" "4c" "000001000200030004000500"  # 40([[2, 3], 69(h'..')])}
)


def test_literal_image_bytes():
    assert cbor2.loads(LITERAL_IMAGE)["image_id"] == 7  # the vector itself is valid CBOR
    msg = decode_v2([LITERAL_IMAGE])
    assert (msg.series_id, msg.image_id, msg.unique_id) == (3, 7, None)
    np.testing.assert_array_equal(msg.frames["threshold_1"],
                                  np.arange(6, dtype=np.uint16).reshape(2, 3))
    assert msg.times == {} and np.isnan(msg.time)


@pytest.mark.parametrize("number, dtype, expect", [
    (64, "u1", np.uint8), (65, ">u2", np.uint16), (66, ">u4", np.uint32),
    (70, "<u4", np.uint32), (77, "<i2", np.int16), (81, ">f4", np.float32),
    (85, "<f4", np.float32)])
def test_typed_arrays_of_either_byte_order(number, dtype, expect):
    values = np.array([[0, 1, 2], [3, 250, 7]])
    body = cmap_items({"type": text("image"), "series_id": uint(1), "image_id": uint(0),
                       "data": cmap_items({"t": typed(number, values, dtype)})})
    frame = decode_v2([self_described(body)]).frames["t"]
    assert frame.dtype == expect and frame.dtype.isnative
    np.testing.assert_array_equal(frame, values.astype(expect))


def test_end_message():
    msg = decode_v2([self_described(cmap(type=text("end"), series_id=uint(17),
                                         series_unique_id=text("01HV-17")))])
    assert msg == SeriesEnd(17, "01HV-17")


def _image(data: bytes) -> bytes:
    return self_described(cmap_items({"type": text("image"), "series_id": uint(1),
                                      "image_id": uint(0), "data": cmap_items({"t": data})}))


U16 = np.arange(15, dtype=np.uint16).reshape(SHAPE)


@pytest.mark.parametrize("parts, reason", [
    ([b"\xff\x00garbage"], "not CBOR"),
    ([self_described(array(uint(1)))], "not a map"),
    ([self_described(cmap(type=text("image"), image_id=uint(0)))], "series_id"),
    ([self_described(cmap(type=text("hello"), series_id=uint(1)))], "unknown message type"),
    ([_image(typed(69, U16, "<u2")), b"x"], "single-part"),
    ([_image(tag(40, array(array(uint(4), uint(5)), tag(69, bstr(U16.tobytes())))))],
     "bytes of pixels"),
    ([_image(tag(1040, array(array(uint(3), uint(5)), tag(69, bstr(U16.tobytes())))))],
     "column-major"),
    ([_image(tag(69, bstr(U16.tobytes())))], "tag 40"),
    ([_image(compressed(69, SHAPE, "bslz4", 2, b"\x00" * 12))], "header says 0 bytes"),
    ([_image(compressed(69, SHAPE, "bslz4", 4, bslz4_bytes(U16)))], "element size 4"),
    ([_image(compressed(65, SHAPE, "bslz4", 2, bslz4_bytes(U16)))], "big-endian"),
    ([_image(compressed(69, SHAPE, "zstd", 2, b"abc"))], "compression 'zstd'"),
    ([_image(typed(83, U16, "<u2"))], "tag 83"),
    ([_image(typed(71, U16, "<u8"))], "pixel type"),
])
def test_malformed_messages_say_why(parts, reason):
    with pytest.raises(DetectorError, match=reason):
        decode_v2(parts)


# ------------------------------------------------------------------ over sockets


@pytest.mark.parametrize("encoding", ["raw", "lz4", "bslz4"])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_series_two_channels_frames_arrive_exactly(encoding, dtype):
    rng = np.random.default_rng(7)
    frames = [{"threshold_1": rng.integers(0, 3000, (40, 56)).astype(dtype),
               "threshold_2": rng.integers(0, 99, (40, 56)).astype(dtype)} for _ in range(6)]
    motors = [{"omega": 0.5 * i} for i in range(6)]
    counters = [{"monitor": 1e4 + i} for i in range(6)]
    with emulator_and_source(2, encoding, motors=["omega"], counters=["monitor"],
                             trajectory=TRAJECTORY, join_timeout=5.0) as (emu, src):
        sender = send_in_thread(emu, frames, series_id=9, motors=motors, counters=counters)
        msgs = decoded(collect(src))
        sender.join(10)
        status = src.status()
    assert kinds(msgs) == ["Start"] + ["Point"] * 6 + ["End"]
    start = first_start(msgs)
    assert start.scan_id == "emu-9" and start.npoints == 6
    assert list(start.detectors) == ["eiger2_si_4m_threshold_1", "eiger2_si_4m_threshold_2"]
    assert all(d.shape == (40, 56) and d.dtype == dtype for d in start.detectors.values())
    assert start.motors == ["omega"] and start.counters == ["monitor"]
    assert start.trajectory == TRAJECTORY and start.meta["series_id"] == 9
    for p in msgs[1:-1]:
        assert isinstance(p, Point) and p.scan_id == "emu-9"
        for ch in ("threshold_1", "threshold_2"):
            got = p.frames[f"eiger2_si_4m_{ch}"]
            assert isinstance(got, EncodedFrame) == (encoding != "raw")
            np.testing.assert_array_equal(as_dense(got), frames[p.point_id][ch])
        assert p.motors == motors[p.point_id] and p.counters == counters[p.point_id]
        assert "flags" not in p.extra and p.extra["start_time"] == p.point_id / 100
    assert sorted(p.point_id for p in msgs[1:-1]) == list(range(6))
    assert msgs[-1] == End("emu-9", "success", 6)
    assert status["state"] == "ended" and status["joined"] == 6 and status["malformed"] == 0


def test_garbage_between_series_is_counted_and_the_next_series_is_whole():
    frames = [np.full((8, 8), i, np.uint16) for i in range(3)]
    with emulator_and_source(2, "bslz4", motors_lane=False) as (emu, src):
        emu.send(b"not cbor at all")
        emu.send([b"\xd9\xd9\xf7", b"two parts"])
        emu.send(self_described(cmap(type=text("image"), series_id=text("x"))))
        emu.send_series(frames, series_id=2)
        msgs = decoded(collect(src))
        status = src.status()
    assert kinds(msgs) == ["Start", "Point", "Point", "Point", "End"]
    assert status["malformed"] == 3 and "series_id" in status["last_error"]
    assert msgs[-1].status == "success"


# ------------------------------------------------------------------ live = replay


@pytest.mark.parametrize("encoding", ["bslz4", "raw"])
def test_same_cliques_as_replaying_the_hdf5_stack(tmp_path, encoding):
    frames, motors, counters = sim_scan("uint16")
    reference = replay_tables(tmp_path, frames, motors, counters)
    two = [{"threshold_1": f, "threshold_2": f // 2} for f in frames]
    with emulator_and_source(2, encoding, motors=["omega"], counters=["monitor"],
                             trajectory=TRAJECTORY, join_timeout=10.0) as (emu, src):
        sender = send_in_thread(emu, two, series_id=4, motors=motors, counters=counters)
        messages = collect(src)
        sender.join(10)
    live, result = live_tables(tmp_path, messages)
    assert result["status"] == "success" and result["processed"] == SIM.npoints
    assert_same_cliques(live, reference)


def test_corrupt_compressed_frame_is_one_bad_point(tmp_path):
    frames, motors, counters = sim_scan("uint16")
    frames, motors, counters = frames[:6], motors[:6], counters[:6]
    with emulator_and_source(2, "bslz4", motors=["omega"], counters=["monitor"],
                             trajectory=TRAJECTORY, join_timeout=10.0) as (emu, src):
        emu.arm(5, frames[0].shape, "uint16", 6)
        for i, f in enumerate(frames):
            emu.motors("emu-5", i, motors[i], counters[i])
            if i == 3:  # a valid header, then blocks of noise
                good = bslz4_bytes(f)
                bad = good[:16] + bytes(len(good) - 16)
                emu.send(self_described(cmap_items({
                    "type": text("image"), "series_id": uint(5),
                    "series_unique_id": text("emu-5"), "image_id": uint(3),
                    "data": cmap_items({"threshold_1": compressed(69, f.shape, "bslz4", 2,
                                                                  bad)})})))
            else:
                emu.image(5, i, f)
        emu.end(5)
        messages = collect(src)
    assert isinstance(decoded(messages)[0], Start)
    live, result = live_tables(tmp_path, messages)
    assert result["status"] == "incomplete" and result["bad"] == 1 and result["processed"] == 5
    assert "1 point(s) bad (the first: point 3: node dense" in result["reason"]
    assert list(live["points"]["status"]) == [0, 0, 0, 2, 0, 0]  # ok, ..., bad
