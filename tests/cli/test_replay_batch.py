"""`peakstream replay` of a master file's scans: one that cannot be opened is reported
and skipped, the others are replayed, and the exit code says one failed."""

from __future__ import annotations

from stream.cli.main import main
from stream.store.reader import load
from tests.support.files import frames, monitors, omegas, write_bliss


def test_a_bad_scan_of_a_batch_does_not_stop_the_others(tmp_path, capsys):
    master = tmp_path / "master.h5"
    n = len(frames())
    write_bliss(master, frames(), omegas(), monitors(), scan="1.1")
    write_bliss(master, frames(), omegas()[:n - 4], monitors(), scan="2.1")  # short motor
    write_bliss(master, frames(), omegas(), monitors(), scan="3.1")
    out = tmp_path / "out"
    code = main(["replay", str(master), "--images", "measurement/eiger", "--motor",
                 "omega=measurement/rot_center", "--output", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["master_1.1.h5", "master_3.1.h5"]
    for name in ("master_1.1.h5", "master_3.1.h5"):
        assert len(load(out / name)["points"]["point_id"]) == n
    assert "2.1: not replayed: " in printed.out and f"{n - 4} values" in printed.out
    assert "2.1: not replayed" in printed.err
