"""Sparse input (our own output, ImageD11 sparse files, sparse frames on the wire) goes
through the nodes that can act on its pixels: the threshold's cut, normalise's scale,
correct's mask. Every node up to the last threshold used to be skipped for it: a
replay with cut = 100 kept pixels of 40, normalise never scaled, and the file's
config said they ran. The nodes that need the dense frame are named in a warning, an
event `warning` in the file and the replay's summary."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.config.schema import Config
from stream.core.item import SparseFrame
from stream.core.messages import DetectorInfo, End, Point, Start
from stream.run.runner import ScanRunner
from stream.store.reader import format_summary, summary
from stream.wire.codec import encode
from tests.support.sparse import SHAPE, assert_same_file, write_sparse

CHAIN = """
[[node]]
kind = "correct"
{correct}
[[node]]
kind = "normalise"
reference = 10000.0               # (counter "monitor")
[[node]]
kind = "threshold"
cut = {cut}
{threshold}
[[node]]
kind = "label"
min_pixels = 1
split = "none"
[[node]]
kind = "properties"
"""


def chain(tmp_path, name, cut, correct="", threshold="", before=""):
    path = tmp_path / name
    path.write_text(before + CHAIN.format(cut=cut, correct=correct, threshold=threshold))
    return path


def sparse_table(path):
    with h5py.File(path, "r") as f:
        g = f["entry"][next(k for k in f["entry"] if "sparse" in f["entry"][k])]["sparse"]
        return {k: g[k][()] for k in ("row", "col", "intensity", "nnz")}


def events(path, kind):
    with h5py.File(path, "r") as f:
        ev = f["entry/process/events"]
        return [m for k, m in zip(ev["kind"].asstr()[()], ev["message"].asstr()[()],
                                  strict=True) if k == kind]


def test_our_output_replayed_with_a_higher_cut_is_cut_and_not_normalised_twice(tmp_path):
    scan = tmp_path / "scan.h5"
    assert main(["simulate", "--output", str(scan), "--points", "30", "--shape", "128", "160",
                 "--spots", "8", "--quiet"]) == 0
    out, again = tmp_path / "out.h5", tmp_path / "again.h5"
    assert main(["replay", str(scan), "--config", str(chain(tmp_path, "c40.toml", 40.0)),
                 "--output", str(out), "--quiet"]) == 0
    assert main(["replay", str(out), "--config", str(chain(tmp_path, "c100.toml", 100.0)),
                 "--output", str(again), "--quiet"]) == 0
    before, after = sparse_table(out), sparse_table(again)
    above = before["intensity"] > 100.0
    assert 0 < above.sum() < above.size  # the cut takes some pixels away
    # the pixels of the first run above the new cut, with their values as they were
    for k in ("row", "col", "intensity"):
        assert np.array_equal(after[k], before[k][above]), k
    assert [m for m in events(again, "warning") if "normalised already" in m]


def test_imaged11_file_through_threshold_mask_and_normalise_in_blocks_and_per_point(
        tmp_path, capsys):
    src = write_sparse(tmp_path / "in.h5", nframes=40)
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:20, 5:30] = 1
    np.save(tmp_path / "mask.npy", mask)
    config = chain(tmp_path, "c.toml", 500.0, correct='mask = "mask.npy"\ndark = 2.0',
                   threshold="max_pixels = 20",
                   before='[[node]]\nkind = "roi_sums"\nrois = [[0, 40, 0, 48]]\n')
    per_point, blocks = tmp_path / "pp.h5", tmp_path / "blocks.h5"
    assert main(["replay", str(src), "--config", str(config), "--per-point", "--quiet",
                 "--output", str(per_point)]) == 0
    assert main(["replay", str(src), "--config", str(config), "--quiet",
                 "--output", str(blocks)]) == 0
    assert_same_file(per_point, blocks)
    with h5py.File(src, "r") as f:
        raw = f["1.1/intensity"][()]
    got = sparse_table(blocks)
    assert got["intensity"].size and got["intensity"].min() > 500.0
    assert not mask[got["row"], got["col"]].any()
    assert got["nnz"].max() <= 20
    assert (got["intensity"].size < (raw > 500).sum())
    flags = events(blocks, "flag")
    assert [m for m in flags if "counter 'monitor' missing; not scaled" in m]
    assert [m for m in flags if "> max_pixels 20" in m]
    warned = events(blocks, "warning")
    assert [m for m in warned if "roi_sums (before the threshold)" in m], warned
    assert [m for m in warned if "dark and flat are not applied" in m], warned
    with h5py.File(blocks, "r") as f:
        assert not [k for k in f["entry/detector"] if k.startswith("roi_")]
    text = format_summary(summary(blocks))
    assert "warning     sparse frames: roi_sums" in text, text


def test_sparse_frames_over_the_wire_are_normalised_and_cut(tmp_path):
    config = Config.load(chain(tmp_path, "c.toml", 40.0))
    runner = ScanRunner(config, output_file=tmp_path / "out.h5")
    shape = (64, 80)
    runner.handle(encode(Start("sp-1", {"eiger": DetectorInfo(shape, "float32")}, ["omega"],
                               ["monitor"], 4, {"kind": "sweep", "fast": "omega"})))
    for i in range(4):
        frame = SparseFrame(shape, np.array([3, 3, 40, 41], np.uint16),
                            np.array([7, 8, 2, 2], np.uint16),
                            np.array([20.0, 30.0, 300.0, 500.0], np.float32))
        runner.handle(encode(Point("sp-1", i, float(i), {"omega": 0.25 * i},
                                   {"monitor": 5000.0}, {"eiger": frame})))
    runner.handle(encode(End("sp-1", "success", 4)))
    runner.close()
    [result] = runner.results
    assert result["status"] == "success"
    got = sparse_table(tmp_path / "out.h5")
    assert got["nnz"].tolist() == [3] * 4  # 20 x 2 = 40 is not above the cut
    assert got["intensity"].tolist() == [60.0, 600.0, 1000.0] * 4


@pytest.mark.parametrize("fmt, name", [("sparse", "s.h5"), ("framecache", "fc.npz")])
def test_our_export_replayed_with_normalise_is_not_normalised_twice(tmp_path, fmt, name):
    """Our own output's pixels are normalised already, which its replay reads from the
    file's config; an export to ImageD11's sparse file or hexrd's frame-cache had no such
    record: replayed with the scan's monitor given back (--counter) every pixel was scaled
    a second time, and without it every point was flagged 'counter missing; not scaled'.
    The export records the normalisation (peakstream_normalised), the replay honours it."""
    scan, out, exported = tmp_path / "scan.h5", tmp_path / "out.h5", tmp_path / name
    assert main(["simulate", "--output", str(scan), "--points", "30", "--shape", "128", "160",
                 "--spots", "8", "--quiet"]) == 0
    config = str(chain(tmp_path, "c40.toml", 40.0))
    assert main(["replay", str(scan), "--config", config, "--output", str(out),
                 "--quiet"]) == 0
    assert main(["export", str(out), "--format", fmt, "--output", str(exported)]) == 0
    with h5py.File(scan, "r") as f:
        np.savetxt(tmp_path / "monitor.txt", f["entry/measurement/monitor"][()])
    original = sparse_table(out)
    assert original["intensity"].size
    for counter in (["--counter", f"monitor=file:{tmp_path / 'monitor.txt'}"], []):
        again = tmp_path / f"again{len(counter)}.h5"
        assert main(["replay", str(exported), "--config", config, "--output", str(again),
                     "--quiet", *counter]) == 0
        got = sparse_table(again)
        for k in ("row", "col", "intensity", "nnz"):
            assert np.array_equal(got[k], original[k]), (counter, k)
        assert not events(again, "flag")
        assert [m for m in events(again, "warning") if "normalised already (counter "
                "'monitor', reference 10000.0); not scaled again" in m]
        assert not [m for m in events(again, "warning") if "not among the scan's" in m]
