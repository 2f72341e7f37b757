"""Formats told from the files' content, inputs grouped into scans, value specs, and
`peakstream replay` on an HDF5 stack from the command line."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from fabio.edfimage import EdfImage

from stream.sources.files import detect_format, open_recording, recordings
from stream.sources.files.common import header_value, parse_spec, parse_specs, scan_id_from
from stream.sources.simulate import write_scan
from stream.store.reader import load
from tests.support.files import SIMCONF, frames, live, monitors, omegas, same, sim, write_bliss
from tests.support.paths import CONFIGS, ROOT


def peakstream(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=180)


def test_formats_from_content_not_names(tmp_path):
    write_scan(sim(), tmp_path / "sim.h5", "s")
    write_bliss(tmp_path / "bliss.dat", frames()[:2], [0, 1], [1, 1])
    with h5py.File(tmp_path / "id11.h5", "w") as f:
        g = f.create_group("1.1")
        for k in ("row", "col", "intensity", "nnz"):
            g[k] = np.zeros(1)
        g.attrs.update(shape0=96, shape1=128)
    EdfImage(data=frames()[0]).write(str(tmp_path / "frame.img"))
    (tmp_path / "notes.h5").write_text("not hdf5")
    assert detect_format(tmp_path / "sim.h5") == "simulate"
    assert detect_format(tmp_path / "bliss.dat") == "hdf5"
    assert detect_format(f"{tmp_path / 'bliss.dat'}::/1.1/measurement/eiger") == "hdf5"
    assert detect_format(tmp_path / "id11.h5") == "imaged11"
    assert detect_format(tmp_path / "frame.img") == "fabio"
    with pytest.raises(ValueError, match="notes.h5: not a recognised recording"):
        detect_format(tmp_path / "notes.h5")
    with pytest.raises(OSError, match="gone.h5: no such file"):
        detect_format(tmp_path / "gone.h5")
    data = (tmp_path / "sim.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:len(data) // 3])
    with pytest.raises(OSError, match="cut.h5: cannot open as HDF5"):
        detect_format(tmp_path / "cut.h5")
    with pytest.raises(ValueError, match="nothing to replay"):
        open_recording([])
    with pytest.raises(ValueError, match=r"bliss.dat: .*--images .*/1.1/instrument/eiger/data"):
        recordings([str(tmp_path / "bliss.dat")])



def test_a_bliss_master_names_the_stacks_it_links_to(tmp_path):
    """A Bliss master file holds its detector's frames only as links into the Lima files
    (external, then soft): the error names those paths, not "no 3D dataset"."""
    lima = tmp_path / "scan0001" / "eiger_0000.h5"
    lima.parent.mkdir()
    with h5py.File(lima, "w") as f:
        f["entry_0000/measurement/data"] = np.stack(frames()[:3])
    with h5py.File(tmp_path / "RAW_0001.h5", "w") as f:
        f["1.1/instrument/eiger/data"] = h5py.ExternalLink("scan0001/eiger_0000.h5",
                                                           "/entry_0000/measurement/data")
        f["1.1/measurement/eiger"] = h5py.SoftLink("/1.1/instrument/eiger/data")
        f["1.1/measurement/gone"] = h5py.ExternalLink("missing.h5", "/data")  # dangling
        f["1.1/measurement/rot"] = np.arange(3.0)
    with pytest.raises(ValueError, match=r"RAW_0001.h5: .*--images .*its 3D datasets: "
                       r"/1.1/instrument/eiger/data, /1.1/measurement/eiger$"):
        recordings([str(tmp_path / "RAW_0001.h5")])

def test_inputs_grouped_into_scans(tmp_path):
    for i in range(3):
        EdfImage(data=frames()[i]).write(str(tmp_path / f"d_{i}.edf"))
    write_scan(sim(), tmp_path / "a.h5", "a")
    write_scan(sim(), tmp_path / "b.h5", "b")
    edf = [str(tmp_path / f"d_{i}.edf") for i in range(3)]
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    assert recordings([*edf, a, b]) == [edf, [a], [b]]
    assert recordings([str(tmp_path / "?.h5")]) == [[a], [b]]
    assert recordings([a], images=["/entry/instrument/eiger/data"]) == [[a]]


def test_simulator_file_with_overrides(tmp_path):
    path = tmp_path / "sim.h5"
    write_scan(sim(), path, "recorded")
    start, points = open_recording([path], first=3, last=6, motors={"dty": 1.5},
                                   trajectory={"kind": "sweep", "fast": "omega"})
    points = list(points)
    assert (start.scan_id, start.npoints, start.motors) == ("recorded", 4, ["omega", "dty"])
    assert [(p.point_id, p.motors["omega"], p.motors["dty"]) for p in points] == \
        [(i, sim().omega(i + 3), 1.5) for i in range(4)]


def test_value_specs():
    assert parse_spec("omega", "range:-10,0.25").at(4) == -9.0
    assert parse_spec("omega", "12.5").at(99) == 12.5
    assert parse_spec("omega", [1, 2, 3]).at(2) == 3.0
    assert parse_spec("omega", "list:1,2").at(1) == 2.0
    assert parse_spec("mon", "header:Flux").at(0, {"Flux": "7 counts"}) == 7.0
    spec = parse_spec("omega", "a.h5::/1.1/rot,/2.1/rot,measurement/rot")
    assert spec.sources == [("a.h5", "/1.1/rot"), (None, "/2.1/rot"), (None, "measurement/rot")]
    assert list(parse_specs(["omega=range:0,1", "dty = 3"])) == ["omega", "dty"]
    assert header_value({"_array_data.header_contents": "# Start_angle 12.5 deg.\r\n"},
                        "Start_angle") == 12.5
    assert scan_id_from("/data/sample 1_%04d.edf") == "sample_1"
    assert scan_id_from("/data/x.h5::/1.1/measurement/eiger", "_1.1") == "x_1.1"
    for bad, words in [("range:1", "range:START,STEP"), ("list:1,a", "list:V0"),
                       ("header:", "header key"), ("file:/nope.txt", "cannot read")]:
        with pytest.raises(ValueError, match=words):
            parse_spec("omega", bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_specs(["omega=1", "omega=2"])
    with pytest.raises(ValueError, match="identifier"):
        parse_spec("2theta", "1")
    with pytest.raises(ValueError, match="header has no key 'x'"):
        header_value({}, "x")


@pytest.mark.system
def test_cli_replays_an_hdf5_stack(tmp_path):
    path = write_bliss(tmp_path / "sample.h5", frames(), omegas(), monitors(), chunk=5,
                       filters={"compression": "gzip"})
    out = tmp_path / "out.h5"
    r = peakstream("replay", str(path), "--images", "/1.1/measurement/eiger",
                   "--motor", "omega=/1.1/measurement/rot_center",
                   "--counter", "monitor=/1.1/measurement/mon",
                   "--config", str(CONFIGS / "simulated.toml"), "--output", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "sample_1.1" in r.stdout
    t = load(out)
    assert len(t["points"]["point_id"]) == SIMCONF.npoints
    same(live(tmp_path), t)
    r = peakstream("replay", str(path), "--images", "/1.1/measurement/eigr",
                   "--output", str(tmp_path / "o2.h5"))
    assert r.returncode == 2 and "sample.h5" in r.stderr and "/1.1/measurement/eigr" in r.stderr
    r = peakstream("replay", str(path), "--output", str(tmp_path / "o3.h5"), "--quiet")
    assert r.returncode == 0 and "no --images given: replaying measurement/eiger" in r.stderr
    r = peakstream("replay", "--help")
    for word in ("--images", "--motor", "--counter", "--time", "--format", "--first", "--last",
                 "range:START,STEP", "header:KEY", "framecache", "examples:"):
        assert word in r.stdout, word
