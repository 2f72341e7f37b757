"""relink (cliques re-cut from a stored file), exports and their round trips, rocking curves."""

from __future__ import annotations

import builtins

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.offline.export import FLT_COLUMNS, flt_columns
from stream.offline.rocking import rocking_curve
from stream.store.reader import load
from tests.support.sparse import config_file, flat_tables, write_sparse


@pytest.fixture
def replayed(tmp_path):
    """A sparse recording replayed with the imaged11 preset (any_pixel)."""
    src = write_sparse(tmp_path / "in.h5", nframes=50, seed=5)
    out = tmp_path / "out.h5"
    assert main(["replay", str(src), "--preset", "imaged11", "--quiet", "--output",
                 str(out)]) == 0
    return src, out


def partition(data) -> set[frozenset]:
    pk = data["peaks2d"]
    groups: dict[int, set] = {}
    for i, c in enumerate(pk["clique_id"].tolist()):
        groups.setdefault(c, set()).add(i)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("args, linker", [
    (["--criterion", "fraction", "--fraction", "0.4"], 'criterion = "fraction"\nfraction = 0.4'),
    (["--criterion", "fraction", "distance", "--distance", "2"],
     'criterion = ["fraction", "distance"]\ndistance = 2.0'),
])
def test_relink_gives_what_a_replay_with_the_criterion_gives(tmp_path, replayed, args, linker):
    src, out = replayed
    relinked = tmp_path / "relinked.h5"
    assert main(["relink", str(out), *args, "--output", str(relinked)]) == 0
    direct = tmp_path / "direct.h5"
    assert main(["replay", str(src), "--config", str(config_file(tmp_path, linker)),
                 "--quiet", "--output", str(direct)]) == 0
    a, b = flat_tables(relinked), flat_tables(direct)
    for k in a:
        if k.startswith(("detector/", "points/")):
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    assert partition(load(relinked)) != partition(load(out))
    with h5py.File(relinked) as f:
        assert f["entry/process/events/kind"].asstr()[()].tolist() == ["relink"]
    assert main(["relink", str(out), "--output", str(relinked)]) == 2  # exists


def test_relink_with_the_same_criterion_changes_nothing(tmp_path, replayed):
    _, out = replayed
    again = tmp_path / "again.h5"
    assert main(["relink", str(out), "--output", str(again)]) == 0
    a, b = flat_tables(out), flat_tables(again)
    for k in a:
        if k.startswith(("detector/", "points/")):
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


@pytest.mark.parametrize("fmt, name", [("sparse", "x.h5"), ("framecache", "x.npz")])
def test_export_and_replay_again_gives_the_same_cliques(tmp_path, replayed, fmt, name):
    _, out = replayed
    exported = tmp_path / name
    assert main(["export", str(out), "--format", fmt, "--output", str(exported)]) == 0
    again = tmp_path / "again.h5"
    assert main(["replay", str(exported), "--preset", "imaged11", "--quiet", "--output",
                 str(again)]) == 0
    a, b = load(out), load(again)
    assert partition(a) == partition(b)
    for k in ("npx", "sum_intensity", "s_raw", "f_raw", "s_ssI", "first_point", "last_point"):
        assert np.array_equal(a["cliques"][k], b["cliques"][k]), k
    assert np.allclose(a["cliques"]["omega"], b["cliques"]["omega"], rtol=0, atol=1e-9)
    if fmt == "sparse":  # the ImageD11 layout round-trips every table exactly
        assert np.array_equal(a["sparse"]["label"], b["sparse"]["label"])


def test_sparse_export_itype_is_its_intensity_dtype_and_older_exports_replay(tmp_path,
                                                                            replayed):
    """itype says what the intensity dataset holds (float32), as ImageD11's assembled scan
    files do (itype = the intensity's dtype); exports that wrote the detector's dtype
    (uint16) beside float32 intensities replay as before, and both to the same cliques."""
    _, out = replayed
    new = tmp_path / "new.h5"
    assert main(["export", str(out), "--format", "sparse", "--output", str(new)]) == 0
    with h5py.File(new) as f:
        g = f["1.1"]
        assert g.attrs["itype"] == g["intensity"].dtype.name == "float32"
    with h5py.File(out) as f:
        assert f["entry/detector/sparse"].attrs["itype"] == "uint16"  # the recording's
    older = tmp_path / "older.h5"
    older.write_bytes(new.read_bytes())
    with h5py.File(older, "r+") as f:  # as exports wrote it before
        f["1.1"].attrs["itype"] = "uint16"
    a = load(out)
    for path, itype in ((new, "float32"), (older, "uint16")):
        again = tmp_path / f"again_{path.name}"
        assert main(["replay", str(path), "--preset", "imaged11", "--quiet", "--output",
                     str(again)]) == 0
        b = load(again)
        assert partition(a) == partition(b), path
        for k in ("npx", "sum_intensity", "s_raw", "f_raw", "first_point", "last_point"):
            assert np.array_equal(a["cliques"][k], b["cliques"][k]), (path, k)
        with h5py.File(again) as f:  # the dtype the replayed file announces
            assert f["entry/detector/sparse"].attrs["itype"] == itype


def test_flt_columns_and_imaged11_reads_it(tmp_path, replayed):
    _, out = replayed
    flt = tmp_path / "x.flt"
    assert main(["export", str(out), "--format", "flt", "--output", str(flt)]) == 0
    data = load(out)
    cols = flt_columns(data)
    cl, pk = data["cliques"], data["peaks2d"]
    assert np.array_equal(cols["spot3d_id"], cl["clique_id"])
    assert np.array_equal(cols["Number_of_pixels"], cl["npx"])
    for c in range(0, len(cl["clique_id"]), 7):
        mine = pk["clique_id"] == c
        assert cols["IMax_int"][c] == pk["max_intensity"][mine].max()
        assert cols["Min_s"][c] == pk["bb_s0"][mine].min()
        assert cols["Max_f"][c] == pk["bb_f1"][mine].max()
    lines = flt.read_text().splitlines()
    assert lines[1].split()[1:] == list(FLT_COLUMNS)
    assert len(lines) == 2 + len(cl["clique_id"])
    columnfile = pytest.importorskip("ImageD11.columnfile")
    c = columnfile.columnfile(str(flt))
    assert c.nrows == len(cl["clique_id"])
    assert np.allclose(c.s_raw, cl["s_raw"], atol=1e-6)
    assert np.allclose(c.omega, cl["omega"], atol=1e-6)
    assert np.array_equal(c.spot3d_id, cl["clique_id"])


def test_rocking_curve_table_is_the_members_sums(tmp_path, replayed, capsys):
    _, out = replayed
    data = load(out)
    c = int(np.argmax(data["cliques"]["n2d"]))
    curve = rocking_curve(out, c)
    pk = data["peaks2d"]
    mine = pk["clique_id"] == c
    points = np.unique(pk["point_id"][mine])
    assert np.array_equal(curve["point_id"], points)
    for p, value in zip(points, curve["intensity"], strict=True):
        assert value == pk["sum_intensity"][mine & (pk["point_id"] == p)].sum()
    assert np.array_equal(curve["omega"], data["points"]["motors/omega"][points])
    assert curve["intensity"].sum() == data["cliques"]["sum_intensity"][c]
    assert main(["inspect", str(out), "--clique", str(c)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[1].split() == ["point_id", "omega", "n2d", "intensity"]
    assert [int(line.split()[0]) for line in text[2:]] == points.tolist()
    assert [float(line.split()[-1]) for line in text[2:]] == curve["intensity"].tolist()
    assert main(["inspect", str(out), "--clique", "99999"]) == 2  # usage: no such clique
    assert "no clique 99999" in capsys.readouterr().err


def test_rocking_curve_png_and_a_clear_message_without_matplotlib(tmp_path, replayed,
                                                                  monkeypatch, capsys):
    _, out = replayed
    c = int(np.argmax(load(out)["cliques"]["n2d"]))
    png = tmp_path / "c.png"
    pytest.importorskip("matplotlib")
    assert main(["inspect", str(out), "--clique", str(c), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["inspect", str(out), "--clique", str(c), "--png", str(tmp_path / "d.png")]) \
        == 2
    assert "pip install -e '.[plot]'" in capsys.readouterr().err


def test_a_360_scan_exported_sparse_replays_with_its_wrap(tmp_path):
    """A spot across 360/0 is one clique, and stays one after export --format sparse and
    a replay of that file (the file carries the trajectory; a sweep would cut it)."""
    nframes = 72
    frames = {f: [(20, 20)] for f in (70, 71, 0, 1)} | {f: [(40, 40)] for f in (10, 11, 12)}
    rows, cols, frame_of = [], [], []
    for f in range(nframes):
        for r, c in frames.get(f, []):
            rr, cc = np.mgrid[r - 1:r + 2, c - 1:c + 2]
            rows += rr.ravel().tolist()
            cols += cc.ravel().tolist()
            frame_of += [f] * rr.size
    src = tmp_path / "wrap.h5"
    with h5py.File(src, "w") as f:
        g = f.create_group("1.1")
        g.attrs.update(itype="uint16", nframes=nframes, shape0=64, shape1=64)
        g["row"], g["col"] = np.array(rows, np.uint16), np.array(cols, np.uint16)
        g["intensity"] = np.full(len(rows), 500, np.uint16)
        g["frame"] = np.array(frame_of, np.uint32)
        g["nnz"] = np.bincount(frame_of, minlength=nframes).astype(np.int64)
        g["measurement/rot_center"] = 5.0 * np.arange(nframes)
    out, exported, again = tmp_path / "out.h5", tmp_path / "sp.h5", tmp_path / "again.h5"
    assert main(["replay", str(src), "--trajectory", "sweep", "--fast", "omega", "--wrap",
                 "--quiet", "--output", str(out)]) == 0
    assert len(load(out)["cliques"]["npx"]) == 2
    assert main(["export", str(out), "--format", "sparse", "--output", str(exported)]) == 0
    assert main(["replay", str(exported), "--quiet", "--output", str(again)]) == 0
    assert partition(load(again)) == partition(load(out))


@pytest.mark.parametrize("fmt", ["flt", "sparse", "framecache", "ptyd"])
def test_export_of_a_file_that_is_not_ours_says_so_as_relink_does(tmp_path, fmt, capsys):
    src = write_sparse(tmp_path / "imaged11.h5", nframes=10)  # an ImageD11 sparse file
    out = tmp_path / f"x.{fmt}"
    assert main(["relink", str(src), "--output", str(tmp_path / "r.h5")]) == 2
    said = capsys.readouterr().err.strip().removeprefix("peakstream relink: ")
    assert main(["export", str(src), "--format", fmt, "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"peakstream export: {said}"
    assert "not a peakstream output file" in said
    assert not out.exists()


def test_relink_fraction_alone_links_by_fraction(tmp_path, replayed, capsys):
    """--fraction without --criterion was ignored (the file's any_pixel kept)."""
    _, out = replayed
    alone, named = tmp_path / "alone.h5", tmp_path / "named.h5"
    assert main(["relink", str(out), "--fraction", "0.4", "--output", str(alone)]) == 0
    assert main(["relink", str(out), "--criterion", "fraction", "--fraction", "0.4",
                 "--output", str(named)]) == 0
    assert partition(load(alone)) == partition(load(named)) != partition(load(out))
    capsys.readouterr()
    wrong = tmp_path / "wrong.h5"
    assert main(["relink", str(out), "--criterion", "distance", "--fraction", "0.4",
                 "--output", str(wrong)]) == 2
    assert "fraction 0.4 has no effect with the criterion distance" in capsys.readouterr().err
    assert not wrong.exists()


def test_flt_of_a_dty_omega_grid_carries_dty_and_imaged11_reads_it(tmp_path):
    """A dty x omega grid: the flt has a dty column, each clique's dty centroid, besides
    omega (it had none: ImageD11's scanning 3DXRD tools key on dty)."""
    from stream.sources.simulate import Simulation, write_scan
    from stream.sources.simulate.config import SimConfig
    from tests.support.paths import CONFIGS

    src, out, flt = tmp_path / "grid.h5", tmp_path / "out.h5", tmp_path / "grid.flt"
    write_scan(Simulation(SimConfig(npoints=360, trajectory="grid", nrows=12, omega_step=0.25,
                                    spots=14, sigma_dty=(0.7, 1.0), shape=(96, 96), seed=1,
                                    sigma_px=(1.0, 1.5))),
               src, "grid")
    assert main(["replay", str(src), "--config", str(CONFIGS / "simulated.toml"), "--quiet",
                 "--output", str(out)]) == 0
    assert main(["export", str(out), "--format", "flt", "--output", str(flt)]) == 0
    cl = load(out)["cliques"]
    assert flt.read_text().splitlines()[1].split()[1:] == [*FLT_COLUMNS, "dty"]
    columnfile = pytest.importorskip("ImageD11.columnfile")
    c = columnfile.columnfile(str(flt))
    assert c.nrows == len(cl["clique_id"]) >= 10
    assert np.allclose(c.dty, cl["dty"], atol=1e-6) and np.ptp(c.dty) > 1.0
    assert np.allclose(c.omega, cl["omega"], atol=1e-6)
