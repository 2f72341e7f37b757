"""peakstream diffmap: pyFAI diff_map's options, its file layout (checked against pyFAI's own
output on the same files), a powder ring at a known angle, a reader during the run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest

from stream.cli.diffmap import (
    add_parser,
    build_parser,
    input_files,
    read_config,
    settings_from,
    to_tuple,
)
from stream.cli.diffmap import run as diffmap_cli
from stream.maps.diffmap import Settings, method3, run_diffmap
from tests.support.diffmap import SHAPE, TTH0, frame, scan_files
from tests.support.files import write_lima
from tests.support.paths import ROOT

RES = "entry_0000/pyFAI/result"


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# ------------------------------------------------------------------ options


def pyfai_parser(monkeypatch) -> argparse.ArgumentParser:
    """pyFAI's own diff_map parser (DiffMap.parse builds it inside; we keep a reference)."""
    diffmap = pytest.importorskip("pyFAI.diffmap")
    seen = []

    class Recording(argparse.ArgumentParser):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self)

    monkeypatch.setattr(diffmap, "ArgumentParser", Recording)
    diffmap.DiffMap().parse(["-o", "x.h5", "-t", "2", "--no-gui"])
    return seen[0]


def test_options_are_pyfais(monkeypatch):
    theirs = pyfai_parser(monkeypatch)
    ours = build_parser()

    def options(p):
        return {(tuple(a.option_strings), a.dest, type(a).__name__) for a in p._actions
                if a.dest != "help"}

    mine = options(ours)
    assert options(theirs) <= mine  # every diff_map option, same strings and dests
    assert mine - options(theirs) == {(("--engine",), "engine", "_StoreAction")}
    for action in theirs._actions:  # same defaults
        if action.dest not in ("help", "version"):
            assert ours.get_default(action.dest) == action.default, action.dest
    argv = ["-p", "g.poni", "-o", "m.h5", "-t", "41", "-r", "21", "-c", "500", "--npt-azim",
            "36", "-d", "a.edf,b.edf", "-f", "f.edf", "-m", "mask.edf", "-O", "3", "-P",
            "img", "-e", ".edf", "--zigzag", "-S", "-g", "--no-gui", "--config", "c.json",
            "-v", "x_1.edf", "x_2.edf"]
    a, b = vars(theirs.parse_args(argv)), vars(parse(argv))
    for key, value in a.items():
        want = int(value) if key in ("fast", "slow", "npt_rad", "npt_azim", "offset") else value
        assert b[key] == want, key


def test_sorting_as_diff_map(tmp_path, monkeypatch):
    diffmap = pytest.importorskip("pyFAI.diffmap")
    names = ["slice06/IRIS4_1_14749.edf", "a_10.edf", "a_9.edf", "b2/a_1.edf", "a_100.cbf"]
    for name in names:
        assert to_tuple(name) == diffmap.DiffMap.to_tuple(name)
    for k in (10, 9, 100, 2):
        (tmp_path / f"img_{k}.edf").write_bytes(b"")
        (tmp_path / f"other_{k}.edf").write_bytes(b"")
    (tmp_path / "img_1.cbf").write_bytes(b"")
    found = input_files([str(tmp_path)], prefix="img", extension=".edf")
    assert [Path(f).name for f in found] == ["img_2.edf", "img_9.edf", "img_10.edf",
                                            "img_100.edf"]
    assert [Path(f).name for f in input_files([str(tmp_path / "img_*")])] == [
        "img_1.cbf", "img_2.edf", "img_9.edf", "img_10.edf", "img_100.edf"]
    with pytest.raises(FileNotFoundError):
        input_files([str(tmp_path / "nothing_*.edf")])


def test_config_written_by_pyfai(tmp_path, monkeypatch):
    diffmap = pytest.importorskip("pyFAI.diffmap")
    from pyFAI.io._json import json_dumps

    files = scan_files(tmp_path, 2)
    mask = tmp_path / "mask.edf"
    fabio.edfimage.EdfImage(data=np.zeros(SHAPE, np.int8)).write(str(mask))
    _, config = diffmap.DiffMap().parse(
        ["-p", str(tmp_path / "geo.poni"), "-o", str(tmp_path / "out.h5"), "-t", "5", "-r", "3",
         "-c", "300", "-m", f"{mask}::0", "-O", "1", "--zigzag", "--no-gui", *files],
        with_config=True)
    (tmp_path / "c.json").write_text(json_dumps(config.as_dict()))
    conf = read_config(str(tmp_path / "c.json"))
    assert (conf["nfast"], conf["nslow"], conf["npt"], conf["offset"]) == (5, 3, 300, 1)
    assert conf["zigzag"] is True and conf["mask"] == f"{mask}::0"  # from fabio:///...?slice=0
    assert conf["poni"]["dist"] == pytest.approx(0.05) and conf["unit"] == "2th_deg"
    assert [Path(p).name for p in conf["inputs"]] == ["scan_0.edf", "scan_1.edf"]
    # the command line wins over the config, as in diff_map
    s = settings_from(parse(["--config", str(tmp_path / "c.json"), "-t", "2", "-c", "50"]))
    assert (s.nfast, s.nslow, s.npt, s.offset, s.zigzag) == (2, 3, 50, 1, True)
    assert s.output.endswith("out.h5") and len(s.inputs) == 2
    assert method3([1, "no", "csr", "cython", None]) == ("no", "csr", "cython")
    assert method3(["bbox", "csr", "cython"]) == ("bbox", "csr", "cython")


def test_usage_errors(tmp_path):
    files = scan_files(tmp_path, 1)
    poni = str(tmp_path / "geo.poni")
    for argv, message in (([*files, "-p", poni, "-t", "2"], "-o"),
                          ([*files, "-p", poni, "-o", "m.h5"], "-t"),
                          ([*files, "-o", "m.h5", "-t", "2"], "geometry"),
                          ([*files, "-p", poni, "-o", "m.h5", "-t", "2", "-d", "nope.edf"],
                           "nope.edf")):
        with pytest.raises((ValueError, OSError), match=message):
            settings_from(parse(argv))


# ------------------------------------------------------------------ runs


def settings(tmp_path: Path, files: list[str], **kw) -> Settings:
    return Settings(inputs=files, output=str(tmp_path / "map.h5"),
                    poni_file=str(tmp_path / "geo.poni"), npt=kw.pop("npt", 120), **kw)


def test_ring_at_known_angle_no_mask(tmp_path):
    """Our integrate node, no mask (diff_map's crashes): each pattern peaks at the ring."""
    files = scan_files(tmp_path, 6)
    summary = run_diffmap(settings(tmp_path, files, nfast=3, nslow=2))
    assert summary["frames"] == 6 and summary["bad"] == 0
    with h5py.File(tmp_path / "map.h5") as f:
        r = f[RES]
        tth, inten = r["2th"][()], r["intensity"][()]
        assert inten.shape == (2, 3, 120) and r["errors"].shape == (2, 3, 120)
        step = tth[1] - tth[0]
        for k in range(6):
            s, q = divmod(k, 3)
            assert r["map_ptr"][s, q] == k
            assert abs(tth[np.nanargmax(inten[s, q])] - TTH0) <= step
        heights = np.nanmax(inten, axis=2).ravel()
        assert np.all(np.diff(heights) > 0)  # the ring grows with the frame number
        assert json.loads(f["entry_0000/pyFAI/configuration/data"].asstr()[()])["engine"] \
            == "peakstream"


def run_pyfai_diff_map(argv: list[str]) -> None:
    diffmap = pytest.importorskip("pyFAI.diffmap")
    dm = diffmap.DiffMap()
    _, config = dm.parse(argv, with_config=True)
    dm.configure_worker(config.ai)
    dm.makeHDF5()
    dm.process()


def test_same_layout_and_values_as_pyfai(tmp_path):
    """With pyFAI as the integrator, our file holds what diff_map writes, at the same paths."""
    files = scan_files(tmp_path, 6)
    mask = np.zeros(SHAPE, np.int8)
    mask[:5, :] = 1
    fabio.edfimage.EdfImage(data=mask).write(str(tmp_path / "mask.edf"))
    argv = ["-p", str(tmp_path / "geo.poni"), "-t", "3", "-r", "2", "-c", "60", "-m",
            str(tmp_path / "mask.edf"), "--zigzag", "--no-gui", *files]
    run_pyfai_diff_map([*argv, "-o", str(tmp_path / "theirs.h5")])
    args = parse([*argv, "-o", str(tmp_path / "ours.h5"), "--engine", "pyfai"])
    assert add_parser  # the same options through `peakstream diffmap`
    assert run_diffmap(settings_from(args))["frames"] == 6
    with h5py.File(tmp_path / "theirs.h5") as a, h5py.File(tmp_path / "ours.h5") as b:
        ra, rb = a[RES], b[RES]
        assert set(ra) <= set(rb) and set(rb) - set(ra) == {"errors"}
        for name in ra:
            assert ra[name].shape == rb[name].shape and ra[name].dtype == rb[name].dtype, name
        for key in ("NX_class", "signal"):
            assert ra.attrs[key] == rb.attrs[key]
        assert list(ra.attrs["axes"]) == list(rb.attrs["axes"])
        assert rb["2th"].attrs["unit"] == ra["2th"].attrs["unit"] == "deg"
        np.testing.assert_array_equal(rb["map_ptr"][()], ra["map_ptr"][()])
        np.testing.assert_array_equal(rb["map_ptr"][()], [[0, 1, 2], [5, 4, 3]])
        np.testing.assert_array_equal(rb["2th"][()], ra["2th"][()])
        np.testing.assert_array_equal(rb["intensity"][()], ra["intensity"][()])
        np.testing.assert_array_equal(rb["map"][()], ra["map"][()])
        for name in ("dim0", "dim1", "dim2", "offset"):
            assert b[f"entry_0000/pyFAI/{name}"][()] == a[f"entry_0000/pyFAI/{name}"][()]
        assert [Path(p).name for p in b["entry_0000/pyFAI/inputfiles"].asstr()[()]] == \
            [Path(p).name for p in a["entry_0000/pyFAI/inputfiles"].asstr()[()]]
        assert a.attrs["default"] == b.attrs["default"]
        assert a["entry_0000"].attrs["default"] == b["entry_0000"].attrs["default"]
    from stream.maps.render import read_map, read_pattern  # our reader reads diff_map's file

    np.testing.assert_array_equal(read_map(tmp_path / "theirs.h5").data,
                                  read_map(tmp_path / "ours.h5").data)
    assert read_pattern(tmp_path / "theirs.h5", 4).place == (1, 1)


def test_offset_multiframe_and_unreadable_file(tmp_path):
    """Frames of a multi-frame file are points; an unreadable file leaves its point empty."""
    files = scan_files(tmp_path, 4)
    multi = fabio.edfimage.EdfImage(data=frame(4))
    multi.append_frame(data=frame(5))
    multi.write(str(tmp_path / "scan_4.edf"))
    (tmp_path / "scan_2.edf").write_bytes(b"{\nDim_1 = 80 ;\n}\nbroken")
    names = files + [str(tmp_path / "scan_4.edf")]
    summary = run_diffmap(settings(tmp_path, names, nfast=2, offset=1, zigzag=True))
    # frames: 0 (before the offset), 1, 2 (unreadable), 3, 4, 5 (two frames of scan_4)
    assert (summary["frames"], summary["bad"], summary["outside"]) == (4, 1, 1)
    with h5py.File(tmp_path / "map.h5") as f:
        r = f[RES]
        np.testing.assert_array_equal(r["map_ptr"][()], [[1, -1], [4, 3], [5, -1]])
        assert np.isnan(r["intensity"][0, 1]).all() and np.isnan(r["intensity"][2, 1]).all()
        assert np.isfinite(r["intensity"][1, 0]).all()
        assert r["map"].shape == (120, 3, 2)  # open-ended: three rows came


def test_rows_given_make_the_map_and_more_frames_are_refused(tmp_path, capsys):
    """-t 4 -r 2 on 12 frames: refused (exit 2, nothing written) with the numbers and the
    -r that fits, not a 3 x 4 map in silence; -r is the map's rows when the frames fit."""
    files = scan_files(tmp_path, 12)
    out = tmp_path / "map.h5"
    argv = [*files, "-p", str(tmp_path / "geo.poni"), "-o", str(out), "-t", "4", "-c", "40"]
    assert diffmap_cli(parse([*argv, "-r", "2"])) == 2
    said = capsys.readouterr().err
    assert "-t 4 x -r 2 make a map of 8 points, but the inputs hold 12 frames" in said
    assert "give -r 3" in said and "-O" in said
    assert not out.exists()
    for extra, rows in ((["-r", "2", "-O", "4"], [[4, 5, 6, 7], [8, 9, 10, 11]]),
                        (["-r", "4"], [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [-1] * 4]),
                        ([], [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])):
        assert diffmap_cli(parse([*argv, *extra])) == 0, capsys.readouterr().err
        with h5py.File(out) as f:
            np.testing.assert_array_equal(f[RES]["map_ptr"][()], rows)
            assert f[RES]["intensity"].shape == (len(rows), 4, 40)
        out.unlink()


@pytest.mark.system
def test_reader_opens_the_file_during_the_run(tmp_path):
    files = scan_files(tmp_path, 6)
    seen = []
    code = ("import h5py, sys, json, numpy as np\n"
            "with h5py.File(sys.argv[1], 'r', locking=False) as f:\n"
            "    r = f['entry_0000/pyFAI/result']\n"
            "    print(json.dumps([r['map_ptr'][()].tolist(),\n"
            "                      np.isfinite(r['intensity'][()]).any(axis=2).tolist()]))\n")

    def progress(done, total):
        if done == 4:  # the first row (3 frames) is written, the fourth frame buffered
            out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "map.h5")],
                                 capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert out.returncode == 0, out.stderr
            seen.append(json.loads(out.stdout))

    run_diffmap(settings(tmp_path, files, nfast=3, nslow=2), progress=progress)
    assert seen == [[[[0, 1, 2], [-1, -1, -1]], [[True, True, True], [False, False, False]]]]


@pytest.mark.system
def test_command_line(tmp_path):
    files = scan_files(tmp_path, 4)
    out = tmp_path / "cli.h5"
    cmd = [sys.executable, "-m", "stream.cli.diffmap", "-p", str(tmp_path / "geo.poni"), "-o",
           str(out), "-t", "2", "-c", "80", "--no-gui", str(tmp_path / "scan_*.edf")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "4 frames" in done.stderr
    with h5py.File(out) as f:
        assert f[RES]["intensity"].shape == (2, 2, 80)
        assert [Path(p).name for p in f["entry_0000/pyFAI/inputfiles"].asstr()[()]] == \
            [Path(p).name for p in files]
    bad = subprocess.run(cmd[:-1] + ["--offset", "x", *files], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "--offset" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "stream.cli.diffmap", "-o", str(out), *files],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "-t" in bad.stderr


@pytest.mark.parametrize("engine", ["peakstream", "pyfai"])
def test_dark_and_flat_lists_are_averaged_and_applied(tmp_path, engine):
    """-d a,b subtracts the mean of the darks, -f divides by the flat: the same map as
    frames corrected beforehand."""
    if engine == "pyfai":
        pytest.importorskip("pyFAI")
    files = scan_files(tmp_path, 4)
    for name, value in (("dark_a", 4.0), ("dark_b", 6.0), ("flat", 2.0)):
        fabio.edfimage.EdfImage(data=np.full(SHAPE, value, np.float32)).write(
            str(tmp_path / f"{name}.edf"))
    pre = tmp_path / "pre"
    pre.mkdir()
    for k in range(4):
        fabio.edfimage.EdfImage(data=(frame(k) - 5.0) / 2.0).write(str(pre / f"scan_{k}.edf"))
    common = ["-p", str(tmp_path / "geo.poni"), "-t", "2", "-c", "60", "--engine", engine]
    run_diffmap(settings_from(parse([*common, "-o", str(tmp_path / "a.h5"), "-d",
                                     f"{tmp_path / 'dark_a.edf'},{tmp_path / 'dark_b.edf'}",
                                     "-f", str(tmp_path / "flat.edf"), *files])))
    run_diffmap(settings_from(parse([*common, "-o", str(tmp_path / "b.h5"),
                                     str(pre / "scan_*.edf")])))
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        ia, ib = a[RES]["intensity"][()], b[RES]["intensity"][()]
        assert np.nanmax(ia) > 40
        np.testing.assert_allclose(ia, ib, rtol=1e-4, atol=1e-3)
        assert [Path(p).name for p in a["entry_0000/pyFAI/darkfiles"].asstr()[()]] == \
            ["dark_a.edf", "dark_b.edf"]


def test_a_poni_file_of_another_detector_shape_is_refused(tmp_path):
    """diffmap took a PONI file made for a 64 x 80 detector on 32 x 40 frames without a
    word; both engines now refuse it at the first frame, naming both shapes."""
    files = scan_files(tmp_path, 2)
    for k, name in enumerate(files):
        fabio.edfimage.EdfImage(data=frame(k)[::2, ::2].copy()).write(name)
    for engine in ("peakstream", "pyfai"):
        with pytest.raises(ValueError, match=r"geo.poni is for a 64 x 80 detector .* 32 x 40"):
            run_diffmap(settings(tmp_path, files, nfast=2, nslow=1, engine=engine))


def test_lima_files_without_a_dataset_path(tmp_path, capsys):
    """Plain Lima files (no Bliss master) were read through fabio, which took them for
    EIGER files ('does not contain an Eiger-like structure'): every frame unreadable, so
    diffmap wanted FILE.h5::/path where replay finds the frames. They are the stacks a
    replay takes, said on stderr: the map of the EDF files of the same frames."""
    edfs = scan_files(tmp_path, 6)
    stack = np.stack([frame(k) for k in range(6)])
    limas = [write_lima(tmp_path / f"eiger_{k:04d}.h5", stack[3 * k:3 * k + 3])
             for k in range(2)]
    argv = ["-p", str(tmp_path / "geo.poni"), "-t", "3", "-c", "80"]
    assert diffmap_cli(parse([*argv, "-o", str(tmp_path / "lima.h5"), *map(str, limas)])) == 0
    err = capsys.readouterr().err
    assert f"{limas[0]}: no FILE::/path given: taking /entry_0000/measurement/data" in err
    assert "0 unreadable" in err
    assert diffmap_cli(parse([*argv, "-o", str(tmp_path / "edf.h5"), *edfs])) == 0
    with h5py.File(tmp_path / "lima.h5") as a, h5py.File(tmp_path / "edf.h5") as b:
        np.testing.assert_array_equal(a[RES]["intensity"][()], b[RES]["intensity"][()])
        assert list(a["entry_0000/pyFAI/inputfiles"].asstr()[()]) == \
            [f"{name}::/entry_0000/measurement/data" for name in limas]
    with h5py.File(limas[1], "a") as f:  # another stack of frames: which one is not guessed
        f["entry_0000/measurement/other"] = stack[:3] + 1
    capsys.readouterr()
    assert diffmap_cli(parse([*argv, "-o", str(tmp_path / "two.h5"), str(limas[1])])) == 2
    assert ("eiger_0001.h5: holds 2 stacks of frames (/entry_0000/measurement/data, "
            "/entry_0000/measurement/other): name the one to take as FILE::/path"
            ) in capsys.readouterr().err
    assert not (tmp_path / "two.h5").exists()
