"""`peakstream replay master.h5` without --images: a Bliss master file whose scan entries
hold one detector's frames is replayed one scan per entry, as with --images; one whose
entries hold two detectors' frames is refused, naming them. Lima files (no scan entry)
are replayed as with --images naming their one stack of frames."""

from __future__ import annotations

import h5py
import numpy as np

from stream.cli.main import main
from stream.store.reader import load
from tests.support.files import (
    frames,
    monitors,
    omegas,
    same,
    write_bliss,
    write_lima_master,
)

VALUES = ["--motor", "omega=measurement/rot_center", "--counter", "monitor=measurement/mon",
          "--quiet"]


def replayed(out) -> dict[str, dict]:
    return {p.name: load(p) for p in sorted(out.iterdir())}


def test_a_master_file_replays_its_entries_as_with_images(tmp_path, capsys):
    """Three scan entries (measurement/eiger a soft link to instrument/eiger/data) and a
    ct without frames: the scans and their files are those of --images measurement/eiger."""
    master = tmp_path / "master.h5"
    for scan in ("1.1", "2.1", "3.1"):
        write_bliss(master, frames(), omegas(), monitors(), scan=scan)
    with h5py.File(master, "a") as f:
        f["4.1/measurement/mon"] = [1.0]
    assert main(["replay", str(master), *VALUES, "--output", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().err
    assert said.count("\n") == 1  # the one line saying which frames it took
    assert "master.h5: no --images given: replaying measurement/eiger of each scan entry " \
           "(as --images measurement/eiger)" in said
    assert main(["replay", str(master), "--images", "measurement/eiger", *VALUES,
                 "--output", str(tmp_path / "b")]) == 0
    a, b = replayed(tmp_path / "a"), replayed(tmp_path / "b")
    assert list(a) == list(b) == ["master_1.1.h5", "master_2.1.h5", "master_3.1.h5"]
    for name in a:
        same(a[name], b[name], ("points", "cliques", "peaks2d", "overlaps"))


def test_a_lima_master_replays_its_virtual_dataset(tmp_path):
    """/1.1/measurement/eiger a virtual dataset over four Lima files: the single 3D
    dataset of its one entry, replayed as --images measurement/eiger would."""
    master = write_lima_master(tmp_path, 5)
    assert main(["replay", str(master), *VALUES, "--output", str(tmp_path / "a.h5")]) == 0
    assert main(["replay", str(master), "--images", "measurement/eiger", *VALUES,
                 "--output", str(tmp_path / "b.h5")]) == 0
    a, b = load(tmp_path / "a.h5"), load(tmp_path / "b.h5")
    assert len(a["points"]["point_id"]) == len(frames())
    same(a, b, ("points", "cliques", "peaks2d", "overlaps"))


def test_two_detectors_are_refused_naming_both(tmp_path, capsys):
    master = write_bliss(tmp_path / "master.h5", frames()[:4], omegas()[:4], monitors()[:4])
    with h5py.File(master, "a") as f:
        f["2.1/measurement/frelon"] = np.stack(frames()[:4])
    assert main(["replay", str(master), "--output", str(tmp_path / "out")]) == 2
    said = capsys.readouterr().err
    assert "measurement/eiger (scan entries 1.1); measurement/frelon (scan entries 2.1)" in said
    assert not (tmp_path / "out").exists()


def test_lima_files_replay_their_frames_as_with_images(tmp_path, capsys):
    """Lima files of no scan entry (/entry_0000/measurement/data, a link to it in
    instrument/) were refused without --images; their one stack of frames is taken, the
    files one scan as with --images /entry_0000/measurement/data, and said so."""
    write_lima_master(tmp_path, 5)
    limas = [str(tmp_path / f"eiger_{k:04d}.h5") for k in range(4)]
    assert main(["replay", *limas, "--quiet", "--output", str(tmp_path / "a.h5")]) == 0
    assert "no --images given: replaying /entry_0000/measurement/data (as --images " \
           "/entry_0000/measurement/data)" in capsys.readouterr().err
    assert main(["replay", *limas, "--images", "/entry_0000/measurement/data", "--quiet",
                 "--output", str(tmp_path / "b.h5")]) == 0
    a, b = load(tmp_path / "a.h5"), load(tmp_path / "b.h5")
    assert len(a["points"]["point_id"]) == len(frames())
    same(a, b, ("points", "cliques", "peaks2d", "overlaps"))
