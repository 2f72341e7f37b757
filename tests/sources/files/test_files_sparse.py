"""Sparse recordings (hexrd frame-cache, our own output) holding the pixels the dense
run kept give the dense run's cliques; recorded missing / bad points stay absent."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.sources.files import detect_format, open_recording
from stream.sources.files.framecache import sparse_frame
from tests.support.files import SIMCONF, TABLES, events, live, omegas, replay, same, status

N = SIMCONF.npoints


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """The live run with point 7 never sent and its output file."""
    tmp = tmp_path_factory.mktemp("dense")
    return live(tmp, skip={7}), tmp / "live-7.h5"


def kept_pixels(tables: dict) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """point_id -> (row, col, intensity) of the pixels the run kept (after normalise)."""
    sp, pts = tables["sparse"], tables["points"]
    ends = np.cumsum(sp["nnz"])
    out = {}
    for pid, st, a, b in zip(pts["point_id"], pts["status"], ends - sp["nnz"], ends,
                             strict=True):
        if st == 0:
            out[int(pid)] = (sp["row"][a:b], sp["col"][a:b], sp["intensity"][a:b])
    return out


def write_framecache(path, pixels, shuffle=()):
    arrays = {"shape": np.array(SIMCONF.shape), "nframes": np.array(N),
              "dtype": np.array("float32"),
              "omega": np.stack([omegas() - 0.125, omegas() + 0.125], axis=1)}
    rng = np.random.default_rng(0)
    for i in range(N):
        row, col, data = pixels.get(i, (np.empty(0, int),) * 3)
        order = rng.permutation(len(row)) if i in shuffle else slice(None)
        arrays[f"{i}_row"], arrays[f"{i}_col"] = row[order].astype(np.int32), col[order]
        arrays[f"{i}_data"] = data[order]
    np.savez_compressed(path, **arrays)
    return path


def test_framecache_gives_the_dense_cliques(tmp_path, dense):
    tables, _ = dense
    path = write_framecache(tmp_path / "scan.npz", kept_pixels(tables), shuffle={9, 10})
    assert detect_format(path) == "framecache"
    start, _ = open_recording([path])
    assert (start.scan_id, start.npoints, start.motors) == ("scan", N, ["omega"])
    t = replay(tmp_path, [path])
    same(tables, t)  # point 7 is an empty frame here: no peak, so no link across it
    np.testing.assert_array_equal(t["points"]["motors/omega"], omegas())


def test_damaged_framecache_frame_is_a_bad_point(tmp_path, dense):
    tables, _ = dense
    pixels = kept_pixels(tables)
    row, col, data = pixels[12]
    pixels[12] = (row, col, data[:-1])  # lengths disagree
    path = write_framecache(tmp_path / "scan.npz", pixels)
    t = replay(tmp_path, [path], counters={"monitor": 1e4})
    assert status(t)[12] == 2 and f"{path} frame 12" in events(t)[12]
    assert t["points"]["counters/monitor"][0] == 1e4


def test_our_output_replays_to_the_same_cliques(tmp_path, dense):
    tables, out = dense
    assert detect_format(out) == "peakstream"
    start, points = open_recording([out])
    assert (start.scan_id, start.npoints, start.motors, start.counters) == \
        ("live", N, ["omega"], ["monitor"])
    assert 7 not in [p.point_id for p in points]
    t = replay(tmp_path, [out])
    same(tables, t, (*TABLES, "sparse"))
    assert status(t)[7] == 1  # missing again
    for col in ("time", "motors/omega", "counters/monitor"):
        assert np.array_equal(t["points"][col], tables["points"][col], equal_nan=True), col


def test_our_output_bad_points_stay_absent_and_a_range_renumbers(tmp_path, dense):
    _, out = dense
    copy = tmp_path / "copy.h5"
    copy.write_bytes(out.read_bytes())
    with h5py.File(copy, "a") as f:
        st = f["entry/points/status"]
        st[3] = 2  # as if point 3 had been bad: its pixels are still counted in nnz
    start, points = open_recording([copy], first=2, last=11, scan_id="again")
    points = list(points)
    assert (start.scan_id, start.npoints) == ("again", 10)
    assert [p.point_id for p in points] == [0, 2, 3, 4, 6, 7, 8, 9]  # 3 bad, 7 missing
    with h5py.File(out) as f:
        nnz = f["entry/eiger/sparse/nnz"][()]
    assert [p.frames["eiger"].nnz for p in points] == [int(nnz[i]) for i in (2, 4, 5, 6, 8,
                                                                            9, 10, 11)]


def test_sparse_frame_sorts_and_sums_duplicates():
    f = sparse_frame(np.array([2, 0, 2, 0]), np.array([1, 5, 1, 0]),
                     np.array([1.0, 2.0, 3.0, 4.0]), (4, 8))
    assert f.row.tolist() == [0, 0, 2] and f.col.tolist() == [0, 5, 1]
    assert f.intensity.tolist() == [4.0, 2.0, 4.0] and f.intensity.dtype == np.float32
    with pytest.raises(ValueError, match="outside the frame"):
        sparse_frame(np.array([4]), np.array([0]), np.array([1.0]), (4, 8))


def test_not_a_framecache(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="x.npz: not a recognised recording"):
        detect_format(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="x.npz: not a hexrd frame-cache"):
        open_recording([tmp_path / "x.npz"], format="framecache")
