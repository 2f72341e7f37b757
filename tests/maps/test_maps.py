"""Maps: placement (row-major, snake, offset, open-ended), the NeXus layout, ROI / annulus
sums and composite tiles against numpy, maps of a real output file, rendering."""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import zlib
from functools import cache
from pathlib import Path

import h5py
import numpy as np
import pytest

from nodes.roi import (
    RoiSums,
    annulus_index,
    annulus_mask,
    annulus_sum,
    bin_sum,
    roi_sum,
    roi_tile,
    sparse_annulus_sum,
    sparse_roi_sum,
    sparse_tile,
)
from stream.core.item import Item, SparseFrame
from stream.maps.build import build_maps
from stream.maps.grid import MapGrid, MapWriter, fill_axis
from stream.maps.render import (
    add_parser,
    false_colour,
    list_maps,
    read_map,
    read_pattern,
    render,
    write_png,
)
from tests.support.paths import ROOT

RES = "entry_0000/pyFAI/result"


# ------------------------------------------------------------------ grid


def test_grid_row_major_snake_offset():
    g = MapGrid(4, 3)
    assert [g.place(i) for i in (0, 3, 4, 7, 11)] == [(0, 0), (0, 3), (1, 0), (1, 3), (2, 3)]
    s = MapGrid(4, 3, snake=True)
    assert [s.place(i) for i in (0, 3, 4, 7, 8, 11)] == [(0, 0), (0, 3), (1, 3), (1, 0),
                                                         (2, 0), (2, 3)]
    o = MapGrid(3, snake=True, offset=2)
    assert o.place(0) == (-1, -1) and o.place(1) == (-1, -1)
    assert [o.place(i) for i in (2, 4, 5, 7)] == [(0, 0), (0, 2), (1, 2), (1, 0)]
    idx = np.arange(40)
    for grid in (g, s, o):
        slow, fast = grid.place(idx)
        assert [(int(a), int(b)) for a, b in zip(slow, fast, strict=True)] == \
            [grid.place(int(i)) for i in idx]
        ok = slow >= 0
        np.testing.assert_array_equal(grid.index(slow[ok], fast[ok]), idx[ok])


def test_grid_from_trajectory():
    assert MapGrid.from_trajectory({"kind": "snake", "nfast": 30}, 360) == \
        MapGrid(30, 12, snake=True)
    assert MapGrid.from_trajectory({"kind": "grid", "nfast": 30}, None) == MapGrid(30)
    with pytest.raises(ValueError, match="grid or snake"):
        MapGrid.from_trajectory({"kind": "sweep"}, 10)
    with pytest.raises(ValueError):
        MapGrid(0)


def test_fill_axis():
    np.testing.assert_allclose(fill_axis(np.array([np.nan, 1.0, np.nan, 3.0])), [0, 1, 2, 3],
                               atol=1e-12)
    np.testing.assert_allclose(fill_axis(np.full(3, np.nan)), [0, 1, 2])


# ------------------------------------------------------------------ writer


def pattern_of(i: int, npt: int = 5) -> np.ndarray:
    return (i * 10 + np.arange(npt)).astype(np.float32)


def write(path: Path, grid: MapGrid, ids, **kw) -> MapWriter:
    radial = np.linspace(1.0, 5.0, 5)
    w = MapWriter(path, grid, radial=radial, unit="q_nm^-1", errors="integrate1d_error",
                  slow_motor="dty", fast_motor="x", **kw)
    for i in ids:
        slow, fast = grid.place(i)
        w.add(i, {"integrate1d": pattern_of(i), "integrate1d_error": np.ones(5),
                  "roi_a": np.array(2.0 * i), "vec": np.array([i, -i], float)},
              {"dty": 0.5 * slow, "x": 10.0 + fast})
    return w


@pytest.mark.parametrize("snake", [False, True])
def test_points_placed_by_id(tmp_path, snake):
    grid = MapGrid(4, 3, snake=snake)
    ids = [5, 0, 1, 2, 3, 4, 7, 8, 9, 11, 10]  # out of order; 6 never comes
    with write(tmp_path / "m.h5", grid, ids) as w:
        pass
    assert w.counts == {"placed": 11, "outside": 0, "duplicate": 0, "ignored": 0}
    with h5py.File(tmp_path / "m.h5") as f:
        r = f[RES]
        ptr, inten = r["map_ptr"][()], r["intensity"][()]
        for i in range(12):
            s, q = grid.place(i)
            if i == 6:
                assert ptr[s, q] == -1 and np.isnan(inten[s, q]).all()
                assert np.isnan(f["entry_0000/maps/roi_a/data"][s, q])
                continue
            assert ptr[s, q] == i
            np.testing.assert_array_equal(inten[s, q], pattern_of(i))
            assert f["entry_0000/maps/roi_a/data"][s, q] == 2.0 * i
            np.testing.assert_array_equal(f["entry_0000/maps/vec/data"][s, q], [i, -i])
            assert f["entry_0000/pyFAI/positions/x"][s, q] == 10.0 + q
        np.testing.assert_array_equal(r["map"][()], np.moveaxis(inten, 2, 0))  # the view
        np.testing.assert_array_equal(r["fast"][()], 10.0 + np.arange(4))
        np.testing.assert_array_equal(r["slow"][()], [0.0, 0.5, 1.0])
        np.testing.assert_array_equal(r["errors"][()][ptr >= 0], 1.0)


def test_open_ended_scan_grows_along_slow(tmp_path):
    grid = MapGrid(3, snake=True)
    with write(tmp_path / "m.h5", grid, range(11)) as w:
        assert w.nrows == 4
    with h5py.File(tmp_path / "m.h5") as f:
        r = f[RES]
        assert r["intensity"].shape == (4, 3, 5) and r["map"].shape == (5, 4, 3)
        np.testing.assert_array_equal(r["map_ptr"][()],
                                      [[0, 1, 2], [5, 4, 3], [6, 7, 8], [-1, 10, 9]])
        assert f["entry_0000/pyFAI/dim0"][()] == 4
        assert r["slow"].shape == (4,) and f["entry_0000/maps/roi_a/data"].shape == (4, 3)
        np.testing.assert_array_equal(r["map"][:, 3, 1], pattern_of(10))


def test_offset_and_duplicates(tmp_path):
    grid = MapGrid(2, 2, offset=3)
    with write(tmp_path / "m.h5", grid, [0, 1, 2, 3, 4, 5, 6, 4]) as w:
        pass
    assert w.counts["outside"] == 3 and w.counts["duplicate"] == 1
    with h5py.File(tmp_path / "m.h5") as f:
        np.testing.assert_array_equal(f[RES]["map_ptr"][()], [[3, 4], [5, 6]])


def test_layout(tmp_path):
    with write(tmp_path / "m.h5", MapGrid(4, 3), range(12), process={"inputfiles": ["a.edf"]},
               config={"nbpt_rad": 5}):
        pass
    with h5py.File(tmp_path / "m.h5") as f:
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["default"] == "entry_0000"
        e = f["entry_0000"]
        assert e.attrs["NX_class"] == "NXentry" and e.attrs["default"] == "pyFAI/result"
        assert e["program_name"].asstr()[()] == "peakstream" and "end_time" in e
        p = e["pyFAI"]
        assert p.attrs["NX_class"] == "NXprocess"
        assert (p["dim0"][()], p["dim1"][()], p["dim2"][()]) == (3, 4, 5)
        assert p["dim0"].attrs["axis"] == "dty" and list(p["dim1"].attrs["range"]) == [10, 13]
        assert list(p["inputfiles"].asstr()[()]) == ["a.edf"]
        assert p["configuration"].attrs["NX_class"] == "NXnote"
        assert p["configuration/type"].asstr()[()] == "text/json"
        assert json.loads(p["configuration/data"].asstr()[()]) == {"nbpt_rad": 5}
        r = e["pyFAI/result"]
        assert r.attrs["NX_class"] == "NXdata" and r.attrs["signal"] == "map"
        assert list(r.attrs["axes"]) == ["q", "slow", "fast"]
        assert r["q"].attrs["unit"] == "nm^-1" and r["q"].attrs["axes"] == 1
        assert (r["slow"].attrs["axes"], r["fast"].attrs["axes"]) == (2, 3)
        assert r["intensity"].dtype == np.float32 and r["intensity"].chunks == (1, 4, 5)
        assert r["map_ptr"].dtype == np.int32
        m = e["maps/roi_a"]
        assert m.attrs["signal"] == "data" and list(m.attrs["axes"]) == ["slow", "fast"]
        np.testing.assert_array_equal(m["slow"][()], r["slow"][()])  # links to result's


def test_caked_patterns(tmp_path):
    grid = MapGrid(2, 2)
    with MapWriter(tmp_path / "c.h5", grid, radial=np.arange(6.0), unit="2th_deg",
                   azimuthal=np.linspace(-150, 150, 3)) as w:
        for i in range(4):
            w.add(i, {"integrate1d": np.full((3, 6), i, np.float32)})
    with h5py.File(tmp_path / "c.h5") as f:
        r = f[RES]
        assert r["intensity"].shape == (2, 2, 3, 6) and r["map"].shape == (3, 6, 2, 2)
        assert list(r.attrs["axes"]) == ["azimuthal", "2th", "slow", "fast"]
        np.testing.assert_array_equal(r["map"][1, 2], [[0, 1], [2, 3]])


@pytest.mark.system
def test_reader_sees_finished_rows_while_writing(tmp_path):
    """A second process opens the file after the first row, the writer still open."""
    path = tmp_path / "m.h5"
    grid = MapGrid(4, 3)
    w = write(path, grid, range(6))  # row 0 complete, row 1 half
    code = ("import h5py, sys, json\n"
            "with h5py.File(sys.argv[1], 'r', locking=False) as f:\n"
            "    r = f['entry_0000/pyFAI/result']\n"
            "    print(json.dumps([r['intensity'][0, :, 0].tolist(), r['map_ptr'][0].tolist(),\n"
            "                      r['map_ptr'][1].tolist()]))\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    row0, ptr0, ptr1 = json.loads(out.stdout)
    assert row0 == [0.0, 10.0, 20.0, 30.0] and ptr0 == [0, 1, 2, 3]
    assert ptr1 == [-1, -1, -1, -1]  # the row in progress is not written yet
    w.flush()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert json.loads(out.stdout)[2] == [4, 5, -1, -1]  # flush() writes rows in progress
    for i in range(6, 12):
        w.add(i, {"integrate1d": pattern_of(i)})
    w.close()


# ------------------------------------------------------------------ ROI, annulus, tiles


def frame_with_nan(shape=(40, 50), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.poisson(20, shape).astype(np.float32)
    frame[rng.random(shape) < 0.02] = np.nan
    return frame


def test_roi_sum_equals_numpy():
    frame = frame_with_nan()
    for roi in ([0, 40, 0, 50], [3, 17, 9, 10], [39, 40, 0, 1]):
        r0, r1, c0, c1 = roi
        assert roi_sum(frame, roi) == pytest.approx(np.nansum(frame[r0:r1, c0:c1],
                                                              dtype=np.float64), rel=1e-12)
    with pytest.raises(ValueError, match="outside"):
        roi_sum(frame, [0, 41, 0, 5])
    with pytest.raises(ValueError, match="empty"):
        roi_sum(frame, [5, 5, 0, 5])


def test_annulus_sum_equals_numpy():
    frame = frame_with_nan()
    rows, cols = np.indices(frame.shape)
    for centre, radius, width in (((20.0, 25.0), 10.0, 3.0), ((0.0, 0.0), 30.0, 5.0),
                                  ((12.3, 40.7), 0.0, 4.0), ((20.0, 25.0), 100.0, 2.0)):
        d = np.hypot(rows - centre[0], cols - centre[1])
        inside = (d >= radius - width / 2) & (d < radius + width / 2)
        np.testing.assert_array_equal(annulus_mask(frame.shape, centre, radius, width), inside)
        np.testing.assert_array_equal(annulus_index(frame.shape, centre, radius, width),
                                      np.flatnonzero(inside))
        assert annulus_sum(frame, centre, radius, width) == pytest.approx(
            np.nansum(frame[inside], dtype=np.float64), rel=1e-12)


def test_tiles_equal_cropped_binned_frames():
    frame = frame_with_nan()
    tile = roi_tile(frame, [2, 13, 5, 24], 3)  # 11 x 19 -> 3 x 6, the remainder dropped
    assert tile.shape == (3, 6) and tile.dtype == np.float32
    clean = np.nan_to_num(frame)
    for i in range(3):
        for j in range(6):
            want = clean[2 + 3 * i:5 + 3 * i, 5 + 3 * j:8 + 3 * j].sum()
            assert tile[i, j] == pytest.approx(want, rel=1e-6)
    np.testing.assert_array_equal(bin_sum(clean, 1), clean)


def test_sparse_sums_equal_dense():
    frame = np.nan_to_num(frame_with_nan())
    frame[frame < 25] = 0
    r, c = np.nonzero(frame)
    sp = SparseFrame(frame.shape, r.astype(np.uint16), c.astype(np.uint16),
                     frame[r, c].astype(np.float32))
    roi = [4, 30, 7, 44]
    assert sparse_roi_sum(sp, roi) == pytest.approx(roi_sum(frame, roi))
    assert sparse_annulus_sum(sp, (20, 25), 12, 6) == pytest.approx(
        annulus_sum(frame, (20, 25), 12, 6))
    np.testing.assert_allclose(sparse_tile(sp, roi, 4), roi_tile(frame, roi, 4), rtol=1e-6)


def test_roi_sums_node():
    node = RoiSums(rois=[[0, 10, 0, 10], [5, 25, 5, 45]], roi_names=["corner", "big"],
                   annuli=[[20, 25, 8, 2]], tiles=True, tile_bin=5)
    frame = frame_with_nan()
    item = node.process(Item(3, "det", frame=frame))
    assert set(item.outputs) == {"roi_corner", "roi_big", "annulus_0", "tile_corner",
                                 "tile_big"}
    assert float(item.outputs["roi_big"]) == pytest.approx(roi_sum(frame, [5, 25, 5, 45]))
    assert float(item.outputs["annulus_0"]) == pytest.approx(annulus_sum(frame, (20, 25), 8, 2))
    np.testing.assert_array_equal(item.outputs["tile_big"], roi_tile(frame, [5, 25, 5, 45], 5))
    for bad in (dict(), dict(rois=[[0, 10, 0]]), dict(rois=[[0, 4, 0, 4]], tiles=True,
                                                      tile_bin=5),
                dict(annuli=[[1, 2, 3, 0]]), dict(rois=[[0, 1, 0, 1]], roi_names=["a b"])):
        with pytest.raises(ValueError):
            RoiSums(**bad)


def test_composite_map_of_tiles(tmp_path):
    """xrsmap's composite: each point's binned ROI at its mesh position (snake)."""
    grid = MapGrid(3, 2, snake=True)
    node = RoiSums(rois=[[4, 20, 6, 30]], roi_names=["r"], tiles=True, tile_bin=4)
    frames = [frame_with_nan(seed=i) for i in range(6)]
    with MapWriter(tmp_path / "c.h5", grid, pattern=None) as w:
        for i, frame in enumerate(frames):
            w.add(i, node.process(Item(i, "det", frame=frame)).outputs)
    with h5py.File(tmp_path / "c.h5") as f:
        comp = f["entry_0000/maps/composite_r/data"][()]
        assert comp.shape == (2 * 4, 3 * 6)
        for i, frame in enumerate(frames):
            s, q = grid.place(i)
            np.testing.assert_array_equal(comp[4 * s:4 * s + 4, 6 * q:6 * q + 6],
                                          roi_tile(frame, [4, 20, 6, 30], 4))
        assert f["entry_0000/maps/roi_r/data"][1, 2] == pytest.approx(
            roi_sum(frames[3], [4, 20, 6, 30]))
        assert f[RES].attrs["signal"] == "map_ptr"  # no patterns


# ------------------------------------------------------------------ maps of an output file


@cache
def snake_output(tmp: str) -> Path:
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig
    from tests.support.files import run

    sim = Simulation(SimConfig(npoints=360, trajectory="snake", nrows=12, omega_step=0.25,
                               spots=14, sigma_dty=(0.7, 1.0), shape=(96, 96),
                               sigma_px=(1.0, 1.5), seed=1, hot_pixels=3, dead_pixels=3))
    path = Path(tmp) / "snake.h5"
    start = sim.start("snake")
    run(start, (sim.point(i, "snake") for i in range(360) if i not in (40, 41)), path)
    return path


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    return snake_output(str(tmp_path_factory.mktemp("maps")))


def test_build_maps_of_an_output_file(output, tmp_path):
    counts = build_maps(output, tmp_path / "maps.h5")
    assert counts["placed"] == 358
    with h5py.File(output) as f:
        pid = f["entry/points/point_id"][()]
        status = f["entry/points/status"][()]
        omega = f["entry/points/motors/omega"][()]
        dty = f["entry/points/motors/dty"][()]
        p2d = f["entry/eiger/peaks2d/point_id"][()]
        cid = f["entry/eiger/peaks2d/clique_id"][()]
    grid = MapGrid(30, 12, snake=True)
    with h5py.File(tmp_path / "maps.h5") as m:
        ptr = m[RES]["map_ptr"][()]
        peaks = m["entry_0000/maps/peaks2d_count/data"][()]
        cliques = m["entry_0000/maps/clique_count/data"][()]
        om = m["entry_0000/pyFAI/positions/omega"][()]
        assert m[RES]["slow"].attrs["long_name"] == "dty"
        np.testing.assert_allclose(m[RES]["slow"][()], np.unique(dty[status == 0]))
        fast_axis = m[RES]["fast"][()]
    assert np.nansum(peaks) == len(p2d) > 50
    for k in range(len(pid)):
        s, q = grid.place(int(pid[k]))
        if status[k] != 0:  # missing points 40, 41
            assert ptr[s, q] == -1 and np.isnan(peaks[s, q])
            continue
        assert ptr[s, q] == pid[k] and om[s, q] == omega[k]
        assert peaks[s, q] == np.count_nonzero(p2d == pid[k])
        assert cliques[s, q] == len(set(cid[(p2d == pid[k]) & (cid >= 0)]))
    # snake: every column holds one omega, whichever way its row ran
    assert np.nanmax(np.nanstd(om, axis=0)) < 1e-9
    np.testing.assert_allclose(fast_axis, np.nanmean(om, axis=0))


def test_a_grid_other_than_the_scans_own_is_used_but_said(output, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="stream.maps.build"):
        build_maps(output, tmp_path / "own.h5", grid=MapGrid(30, snake=True))  # its own
        assert not caplog.records
        build_maps(output, tmp_path / "other.h5", grid=MapGrid(20))
    (record,) = caplog.records
    assert "(20 points a row) is not the scan's own snake of 30 points a row" in \
        record.getMessage()
    with h5py.File(tmp_path / "other.h5") as m:
        assert m[RES]["map_ptr"].shape[-1] == 20


def test_map_command_renders_an_output_file(output, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    top = argparse.ArgumentParser(prog="peakstream")
    add_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(["map", str(output), "--png", str(tmp_path / "p.png"),
                           "--map", "peaks2d_count", "--output", str(tmp_path / "m.h5")])
    assert args.func(args) == 0, capsys.readouterr().err
    import matplotlib.image

    img = matplotlib.image.imread(tmp_path / "p.png")
    assert img.ndim == 3 and img.shape[0] > 100
    assert "peaks2d_count" in list_maps(tmp_path / "m.h5")
    args = top.parse_args(["map", str(tmp_path / "m.h5")])
    assert args.func(args) == 0
    assert "clique_count" in capsys.readouterr().out
    args = top.parse_args(["map", str(tmp_path / "m.h5"), "--png", str(tmp_path / "x.png"),
                           "--map", "nothing"])
    assert args.func(args) == 2


def test_read_and_render_pattern(tmp_path):
    pytest.importorskip("matplotlib")
    with write(tmp_path / "m.h5", MapGrid(4, 3, snake=True), range(12)):
        pass
    image = read_map(tmp_path / "m.h5")
    assert image.name == "intensity"
    np.testing.assert_allclose(image.data[1, 3], pattern_of(4).sum())  # snake: 4 at (1, 3)
    pat = read_pattern(tmp_path / "m.h5", 4)
    assert pat.place == (1, 3) and "q" in pat.label
    np.testing.assert_array_equal(pat.intensity, pattern_of(4))
    assert render(tmp_path / "r.png", image, pat) == "matplotlib"
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not in the map"):
        read_pattern(tmp_path / "m.h5", 99)


def decode_png(data: bytes) -> np.ndarray:
    """A reader for the writer's own PNGs (RGB8, filter 0)."""
    pos, idat, size = 8, b"", None
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_writer_without_matplotlib(tmp_path):
    data = np.array([[0.0, 1.0, np.nan], [2.0, 3.0, 4.0]])
    rgb = false_colour(data, scale=2)
    assert rgb.shape == (4, 6, 3)
    np.testing.assert_array_equal(rgb[2, 0], [68, 1, 84])  # the minimum, bottom-left
    np.testing.assert_array_equal(rgb[0, 4], [253, 231, 37])  # the maximum, top row
    np.testing.assert_array_equal(rgb[3, 5], [128, 128, 128])  # NaN
    write_png(tmp_path / "f.png", rgb)
    np.testing.assert_array_equal(decode_png((tmp_path / "f.png").read_bytes()), rgb)


def test_build_maps_places_stored_node_outputs(output, tmp_path):
    """Outputs stored one row per /entry/points row (and the integrate node's once-per-scan
    radial axis) become the pattern map and feature maps."""
    import shutil

    path = tmp_path / "with_outputs.h5"
    shutil.copy(output, path)
    with h5py.File(path, "a") as f:
        pid = f["entry/points/point_id"][()]
        det = f["entry/eiger"]
        det["integrate1d"] = np.stack([pattern_of(int(i), 7) for i in pid])
        det["integrate1d_error"] = np.ones((len(pid), 7), np.float32)
        det["integrate1d_radial"] = np.linspace(0.5, 3.5, 7)
        det["integrate1d_radial"].attrs["units"] = "q_A^-1"
        det["roi_spot"] = pid * 3.0
    build_maps(path, tmp_path / "m.h5")
    grid = MapGrid(30, 12, snake=True)
    with h5py.File(tmp_path / "m.h5") as m:
        r = m[RES]
        assert r["intensity"].shape == (12, 30, 7) and list(r.attrs["axes"])[0] == "q"
        assert r["q"].attrs["unit"] == "A^-1"
        np.testing.assert_array_equal(r["q"][()], np.linspace(0.5, 3.5, 7))
        for i in (0, 31, 59, 200):
            s, q = grid.place(i)
            np.testing.assert_array_equal(r["intensity"][s, q], pattern_of(i, 7))
            assert m["entry_0000/maps/roi_spot/data"][s, q] == 3.0 * i
        assert np.isnan(r["intensity"][grid.place(40)]).all()  # a missing point
        assert "integrate1d_radial" not in m["entry_0000/maps"]


def test_roimap_config_builds_the_roi_node(monkeypatch):
    """configs/roimap.toml: its roi_sums node gives the sums of its ROIs and annulus."""
    import nodes
    from stream.config.schema import Config
    from tests.support.paths import CONFIGS

    monkeypatch.setitem(nodes.NODES, "roi_sums", RoiSums)  # until nodes/__init__ has it
    chain = Config.load(CONFIGS / "roimap.toml").build_nodes()
    node = next(n for n in chain if n.kind == "roi_sums")
    frame = frame_with_nan((256, 256))
    out = node.process(Item(0, "det", frame=frame)).outputs
    assert float(out["roi_spot"]) == pytest.approx(roi_sum(frame, [100, 164, 100, 164]))
    assert float(out["annulus_ring"]) == pytest.approx(annulus_sum(frame, (128, 128), 60, 6))
    assert out["tile_all"].shape == (64, 64)


def test_map_of_a_missing_file_says_so(tmp_path, capsys):
    from stream.cli.main import main

    assert main(["map", str(tmp_path / "nothere.h5")]) == 2
    assert capsys.readouterr().err.strip() == f"peakstream map: {tmp_path / 'nothere.h5'}: " \
                                              f"no such file"
