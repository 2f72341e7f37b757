"""ImageD11 parity on the real silicon file (TARGETS.md P3): the stored reference counts
always, the member sets against ImageD11 itself when it is installed."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.store.reader import load
from tests.support.paths import ROOT

SILICON = ROOT.parent / "shared" / "data" / "silicon_fullscan_strong_sparse.h5"
# ImageD11 2.1.3: SparseScan + cplabel (8-connected) + overlaps_linear between consecutive
# frames in omega order + connected components (shared/data/README.md)
REFERENCE = {"peaks2d": 85957, "overlaps": 78318, "cliques": 7890,
             "sum_intensity": 893861375}

needs_silicon = pytest.mark.skipif(not SILICON.exists(), reason=f"{SILICON} not present")


@pytest.fixture(scope="module")
def silicon_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("silicon") / "si.h5"
    assert main(["replay", str(SILICON), "--preset", "imaged11", "--output", str(out),
                 "--quiet"]) == 0
    return out


@needs_silicon
def test_silicon_matches_reference_counts(silicon_out):
    data = load(silicon_out)
    assert len(data["points"]["point_id"]) == 180500
    assert len(data["sparse"]["row"]) == 1386348
    assert len(data["peaks2d"]["npx"]) == REFERENCE["peaks2d"]
    assert len(data["overlaps"]["peak_a"]) == REFERENCE["overlaps"]
    assert len(data["cliques"]["clique_id"]) == REFERENCE["cliques"]
    assert data["peaks2d"]["sum_intensity"].sum() == REFERENCE["sum_intensity"]
    assert data["cliques"]["sum_intensity"].sum() == REFERENCE["sum_intensity"]
    assert (data["peaks2d"]["clique_id"] >= 0).all()
    with h5py.File(silicon_out) as f:
        assert f["entry"].attrs["status"] == "success"
        omega = f["entry/points/motors/omega"][()]
    with h5py.File(SILICON) as f:
        assert np.array_equal(omega, f["1.1/measurement/rot_center"][()])


@needs_silicon
def test_silicon_member_sets_equal_imaged11(silicon_out):
    pytest.importorskip("ImageD11")
    import scipy.sparse
    from ImageD11 import sparseframe
    from ImageD11.sinograms import properties

    scan = sparseframe.SparseScan(str(SILICON), "1.1")
    peaks, pairs = properties.props(scan, 0, algorithm="cplabel")
    first_peak = sparseframe.nnz_to_pointer(scan.nlabels)
    a, b = [], []
    for (_, frame_a, _, frame_b), (n, ijn) in pairs.items():
        if n:
            a.append(first_peak[frame_a] + ijn[:, 0] - 1)
            b.append(first_peak[frame_b] + ijn[:, 1] - 1)
    a, b = np.concatenate(a), np.concatenate(b)
    npk = int(first_peak[-1])
    ncc, id11_clique = scipy.sparse.csgraph.connected_components(
        scipy.sparse.coo_matrix((np.ones(a.shape[0]), (a, b)), shape=(npk, npk)),
        directed=False)
    # ImageD11's 2D peak of every pixel, and its 3D peak
    id11_peak = first_peak[np.repeat(np.arange(len(scan.nnz)), scan.nnz)] + scan.labels - 1

    data = load(silicon_out)
    nnz = data["sparse"]["nnz"]
    npeaks = np.bincount(data["peaks2d"]["point_id"], minlength=len(nnz))
    ours_peak = np.repeat(np.r_[0, np.cumsum(npeaks)[:-1]], nnz) + data["sparse"]["label"] - 1
    ours_clique = data["peaks2d"]["clique_id"][ours_peak]

    def same_partition(x: np.ndarray, y: np.ndarray) -> bool:
        pairs = np.unique(np.c_[x, y], axis=0)
        return len(pairs) == len(np.unique(x)) == len(np.unique(y))

    assert npk == REFERENCE["peaks2d"] and ncc == REFERENCE["cliques"]
    assert a.shape[0] == REFERENCE["overlaps"]
    assert same_partition(id11_peak, ours_peak)  # the same 2D peaks (pixel sets)
    assert same_partition(id11_clique[id11_peak], ours_clique)  # the same 3D peaks
    # and the same overlap edges, pixel counts included
    ours_of = np.empty(npk, np.int64)
    ours_of[id11_peak] = ours_peak
    theirs = {(int(x), int(y)) for x, y in zip(ours_of[a], ours_of[b], strict=True)}
    ov = data["overlaps"]
    assert theirs == set(zip(ov["peak_a"].tolist(), ov["peak_b"].tolist(), strict=True))


def test_reader_finds_group_and_orders_by_omega(tmp_path):
    from stream.sources.files.imaged11 import read_imaged11_blocks, read_imaged11_sparse

    path = tmp_path / "id11.h5"
    nnz = np.array([2, 0, 1])
    with h5py.File(path, "w") as f:
        g = f.create_group("2.1")
        g.attrs.update(itype="uint16", nframes=3, shape0=10, shape1=12)
        g["row"] = np.array([1, 1, 5], np.uint16)
        g["col"] = np.array([2, 3, 7], np.uint16)
        g["intensity"] = np.array([5, 6, 7], np.uint16)
        g["nnz"] = nnz
        g["measurement/rot"] = np.array([0.2, 0.1, 0.3])
        g["instrument/positioners/dty"] = 1.5
    start, points = read_imaged11_sparse(path)
    points = list(points)
    assert start.npoints == 3 and start.detectors["detector"].shape == (10, 12)
    assert start.motors == ["omega", "dty"] and start.counters == ["frame"]
    assert [p.counters["frame"] for p in points] == [1.0, 0.0, 2.0]  # omega order
    assert [p.motors["omega"] for p in points] == [0.1, 0.2, 0.3]
    assert all(p.motors["dty"] == 1.5 for p in points)
    assert points[1].frames["detector"].col.tolist() == [2, 3]
    assert points[0].frames["detector"].nnz == 0
    with pytest.raises(ValueError, match="no sparse group '9.1'"):
        with h5py.File(path, "a") as f:
            f.copy("2.1", "3.1")
        read_imaged11_blocks(path, scan_id="9.1")
    start, _ = read_imaged11_blocks(path, scan_id="3.1")
    assert start.meta["group"] == "3.1"
