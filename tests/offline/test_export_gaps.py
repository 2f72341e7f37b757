"""Exports of a scan with missing points replay to the scan's cliques, the missing
points missing again, under the detector's own name; ImageD11 sparse files with
unrecorded (NaN) omegas keep their frame order; a config naming a detector the
recording lacks is a clear error; exports use the scan's rotation motor (diffrz)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.store.reader import load
from tests.support.files import frames, live, monitors, omegas, write_bliss
from tests.support.paths import CONFIGS
from tests.support.sparse import write_sparse

GAP = (10, 11)


@pytest.fixture(scope="module")
def gapped(tmp_path_factory):
    """The simulated scan run live with points 10 and 11 never sent."""
    tmp = tmp_path_factory.mktemp("gap")
    live(tmp, skip=set(GAP))
    return tmp / "live-10-11.h5"


def replay_export(tmp_path, out, fmt: str, name: str, config=CONFIGS / "simulated.toml"):
    exported = tmp_path / name
    assert main(["export", str(out), "--format", fmt, "--output", str(exported)]) == 0
    again = tmp_path / f"again-{fmt}.h5"
    code = main(["replay", str(exported), "--config", str(config), "--quiet",
                 "--output", str(again)])
    return exported, again, code


def assert_same_cliques(a: dict, b: dict) -> None:
    assert len(a["cliques"]["clique_id"]) >= 3
    assert np.array_equal(a["peaks2d"]["point_id"], b["peaks2d"]["point_id"])
    assert np.array_equal(a["peaks2d"]["clique_id"], b["peaks2d"]["clique_id"])
    assert len(a["overlaps"]["peak_a"]) == len(b["overlaps"]["peak_a"])
    for k in ("npx", "sum_intensity", "s_raw", "f_raw", "first_point", "last_point", "omega"):
        assert np.allclose(a["cliques"][k], b["cliques"][k], rtol=0, atol=1e-9), k


@pytest.mark.parametrize("fmt, name", [("sparse", "x.h5"), ("framecache", "x.npz")])
def test_export_of_a_scan_with_missing_points_replays_with_them_missing(tmp_path, gapped,
                                                                         fmt, name):
    exported, again, code = replay_export(tmp_path, gapped, fmt, name)
    assert code == 0
    if fmt == "framecache":  # only the missing points lack their omega range
        with np.load(exported) as npz:
            nan = np.isnan(npz["omega"]).any(axis=1)
        assert np.flatnonzero(nan).tolist() == list(GAP)
    a, b = load(gapped), load(again)
    assert_same_cliques(a, b)
    status = dict(zip(b["points"]["point_id"].tolist(), b["points"]["status"].tolist(),
                      strict=True))
    assert [p for p, s in sorted(status.items()) if s != 0] == list(GAP)  # missing (1)
    assert {status[p] for p in GAP} == {1}
    with h5py.File(again) as f:
        assert f["entry"].attrs["status"] == "incomplete"


def test_nan_omega_frames_keep_their_place(tmp_path):
    """An ImageD11 file whose omega was not recorded for some frames: those frames stay
    where they are; the others are still sorted by omega."""
    src = write_sparse(tmp_path / "in.h5", nframes=30, seed=3)
    omega = 0.25 * np.arange(30)
    omega[[4, 5]] = np.nan
    omega[[20, 21]] = omega[[21, 20]]  # out of order: sorted
    with h5py.File(src, "a") as f:
        f["1.1/measurement/rot_center"][...] = omega
    out = tmp_path / "out.h5"
    assert main(["replay", str(src), "--preset", "imaged11", "--quiet", "--output",
                 str(out)]) == 0
    frame = load(out)["points"]["counters/frame"]
    expected = np.arange(30)
    expected[[20, 21]] = [21, 20]
    assert frame.tolist() == expected.tolist()


def named_config(tmp_path, detector: str):
    """configs/simulated.toml with [source] detector = `detector`."""
    text = (CONFIGS / "simulated.toml").read_text()
    path = tmp_path / f"{detector}.toml"
    path.write_text(text.replace('[source]\n', f'[source]\ndetector = "{detector}"\n', 1))
    return path


@pytest.mark.parametrize("fmt, name", [("sparse", "x.h5"), ("framecache", "x.npz")])
def test_exports_keep_the_detector_name(tmp_path, gapped, fmt, name):
    _, again, code = replay_export(tmp_path, gapped, fmt, name,
                                   config=named_config(tmp_path, "eiger"))
    assert code == 0
    b = load(again)
    assert b["detector"] == "eiger"
    assert_same_cliques(load(gapped), b)


@pytest.mark.parametrize("kind", ["imaged11", "framecache"])
def test_a_config_naming_another_detector_is_a_clear_error(tmp_path, gapped, kind, capsys):
    """In blocks (an ImageD11 file) it was a KeyError traceback, point by point (a
    frame-cache) exit 0 and no file."""
    if kind == "imaged11":
        src = write_sparse(tmp_path / "in.h5", nframes=20)
    else:
        src = tmp_path / "x.npz"
        assert main(["export", str(gapped), "--format", "framecache", "--output",
                     str(src)]) == 0
    out = tmp_path / "out.h5"
    capsys.readouterr()
    assert main(["replay", str(src), "--config", str(named_config(tmp_path, "pilatus")),
                 "--quiet", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no detector 'pilatus'" in err[0] and "[source] detector" in err[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def diffrz_scan(tmp_path_factory):
    """The simulated scan as Bliss records it, its rotation motor called diffrz."""
    tmp = tmp_path_factory.mktemp("diffrz")
    src = write_bliss(tmp / "bliss.h5", frames(), omegas(), monitors())
    out = tmp / "out.h5"
    assert main(["replay", str(src), "--images", "/1.1/measurement/eiger", "--motor",
                 "diffrz=/1.1/measurement/rot_center", "--counter",
                 "monitor=/1.1/measurement/mon", "--config", str(CONFIGS / "simulated.toml"),
                 "--quiet", "--output", str(out)]) == 0
    return out


def test_exports_use_the_scans_rotation_motor(tmp_path, diffrz_scan, capsys):
    """flt's omega, IMax_o, Min_o, Max_o and the frame-cache's omega come from diffrz
    (they were NaN, and no frame-cache omega, without a word)."""
    data = load(diffrz_scan)
    cl, diffrz = data["cliques"], data["points"]["motors/diffrz"]
    assert len(cl["clique_id"]) >= 3
    flt, npz = tmp_path / "x.flt", tmp_path / "x.npz"
    assert main(["export", str(diffrz_scan), "--format", "flt", "--output", str(flt)]) == 0
    assert main(["export", str(diffrz_scan), "--format", "framecache", "--output",
                 str(npz)]) == 0
    assert "warning" not in capsys.readouterr().err
    names = flt.read_text().splitlines()[1].split()[1:]
    table = np.loadtxt(flt, ndmin=2)
    col = {c: table[:, i] for i, c in enumerate(names)}
    assert np.allclose(col["omega"], cl["diffrz"], atol=1e-6)
    assert np.allclose(col["Min_o"], diffrz[cl["first_point"]], atol=1e-6)
    assert np.allclose(col["Max_o"], diffrz[cl["last_point"]], atol=1e-6)
    assert np.isfinite(col["IMax_o"]).all()
    with np.load(npz) as z:
        assert np.allclose(z["omega"].mean(axis=1), diffrz)


def test_export_without_a_rotation_motor_says_so(tmp_path, diffrz_scan, capsys):
    flt = tmp_path / "x.flt"
    assert main(["export", str(diffrz_scan), "--format", "flt", "--omega", "phi",
                 "--output", str(flt)]) == 2
    assert "no such motor (its motors: diffrz)" in capsys.readouterr().err
    assert not flt.exists()
    scan = tmp_path / "scan.h5"
    scan.write_bytes(diffrz_scan.read_bytes())
    with h5py.File(scan, "a") as f:  # the trajectory no longer names diffrz
        f["entry/points"].attrs["trajectory"] = '{"kind": "grid", "fast": "x", "nfast": 4}'
        f.move("entry/points/motors/diffrz", "entry/points/motors/phi")
    assert main(["export", str(scan), "--format", "flt", "--output", str(flt)]) == 0
    assert "no rotation motor among the scan's motors (phi)" in capsys.readouterr().err
    assert main(["export", str(scan), "--format", "flt", "--omega", "phi",
                 "--output", str(tmp_path / "y.flt")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_scans_rotation_centre_is_omega_before_its_start(tmp_path, diffrz_scan, capsys):
    """A Bliss fly scan records rot (each frame's start) and rot_center (its middle):
    export took rot (the flt's omega half a step off), where ImageD11 sparse files and
    replay's unread-rotation warning took rot_center; one list now serves all three."""
    scan = tmp_path / "scan.h5"
    scan.write_bytes(diffrz_scan.read_bytes())
    with h5py.File(scan, "a") as f:
        points = f["entry/points"]
        points.attrs["trajectory"] = '{"kind": "grid", "fast": "x", "nfast": 4}'
        centre = points["motors/diffrz"][()]
        points.move("motors/diffrz", "motors/rot_center")
        points["motors"].create_dataset("rot", data=centre - 0.125)
    flt = tmp_path / "x.flt"
    assert main(["export", str(scan), "--format", "flt", "--output", str(flt)]) == 0
    assert "warning" not in capsys.readouterr().err
    names = flt.read_text().splitlines()[1].split()[1:]
    table = np.loadtxt(flt, ndmin=2)
    data = load(scan)
    first = data["cliques"]["first_point"]
    assert np.allclose(table[:, names.index("Min_o")], centre[first], atol=1e-6)
