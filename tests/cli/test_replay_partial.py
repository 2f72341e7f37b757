"""`peakstream replay` where a recording is not whole: a master file's scan that cannot
be opened is skipped (the others are replayed, exit 1); a series that lacks a file
cannot fill it in."""

from __future__ import annotations

import numpy as np

from stream.cli.main import main
from stream.store.reader import format_summary, load, summary
from tests.support.files import (
    frames,
    monitors,
    omegas,
    same,
    status,
    write_bliss,
    write_lima_master,
)


def test_a_bad_scan_of_a_batch_does_not_stop_the_others(tmp_path, capsys, caplog):
    import h5py

    master = tmp_path / "master.h5"
    n = len(frames())
    write_bliss(master, frames(), omegas(), monitors(), scan="1.1")
    write_bliss(master, frames(), omegas(), monitors(), scan="2.1")
    write_bliss(master, frames(), omegas(), monitors(), scan="3.1")
    with h5py.File(master, "a") as f:  # a ct: no frames of that detector
        f["4.1/measurement/mon"] = [1.0]
        del f["2.1/measurement/rot_center"]  # no motor
    out = tmp_path / "out"
    code = main(["replay", str(master), "--images", "measurement/eiger", "--motor",
                 "omega=measurement/rot_center", "--output", str(out), "--quiet"])
    assert any("scan entries 4.1 hold no measurement/eiger" in r.getMessage()
               for r in caplog.records)  # said, not skipped in silence
    printed = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["master_1.1.h5", "master_3.1.h5"]
    for name in ("master_1.1.h5", "master_3.1.h5"):
        assert len(load(out / name)["points"]["point_id"]) == n
    assert "2.1: not replayed: " in printed.out and "no dataset for omega" in printed.out
    assert "2.1: not replayed" in printed.err


def test_fill_from_a_recording_that_lacks_the_missing_points(tmp_path, capsys):
    """A file missing from an EDF series is a missing point; --fill from the same series
    cannot complete it: it says so and leaves the file as it was (no endless loop of
    'incomplete, --fill completes it')."""
    from fabio.edfimage import EdfImage

    for i, frame in enumerate(frames()):
        if i != 7:
            EdfImage(data=frame, header={"omega": repr(float(omegas()[i]))}).write(
                str(tmp_path / f"d_{i:04d}.edf"))
    pattern, out = str(tmp_path / "d_%04d.edf"), tmp_path / "scan.h5"
    args = ["replay", pattern, "--first", "0", "--last", str(len(frames()) - 1), "--motor",
            "omega=header:omega", "--quiet"]
    assert main([*args, "--output", str(out)]) == 0
    assert "1 point(s) missing" in capsys.readouterr().out
    before = out.read_bytes()
    assert main([*args, "--fill", str(out)]) == 1
    assert "holds none of its 1 missing or bad point(s) (7) readable: nothing to fill" in \
        capsys.readouterr().err
    assert out.read_bytes() == before and not (tmp_path / "scan.h5.before-fill").exists()


def _lima_master(tmp_path) -> list[str]:
    """A Bliss-like master whose virtual dataset maps four Lima files of 5 frames
    (eiger_0000.h5 ...); the replay arguments that read it."""
    master = write_lima_master(tmp_path, 5)
    return ["replay", "--images", f"{master}::/1.1/measurement/eiger", "--motor",
            "omega=/1.1/measurement/rot_center", "--quiet"]


def test_fill_reprocesses_bad_points_once_the_data_are_readable(tmp_path, capsys):
    """Two of a master's four Lima files gone: their frames are bad points and the scan
    ends incomplete (never a silent success). With one file back, --fill reprocesses the
    bad points it holds, those of the other stay bad with their reason; with both back
    the file equals a replay of the whole scan (--fill took only missing points), with
    the images and motor the file recorded when not given again."""
    out, whole = tmp_path / "scan.h5", tmp_path / "whole.h5"
    args = _lima_master(tmp_path)
    assert main([*args, "--output", str(whole)]) == 0
    for k in (1, 2):
        (tmp_path / f"eiger_{k:04d}.h5").rename(tmp_path / f"away_{k}.h5")
    assert main([*args, "--output", str(out)]) == 0  # as for any incomplete scan
    said = capsys.readouterr().out
    assert "scan master_1.1: incomplete" in said and "10 bad" in said
    assert "10 point(s) bad (the first: point 5: " in said and "--fill FILE" in said
    (tmp_path / "away_1.h5").rename(tmp_path / "eiger_0001.h5")
    assert main([*args, "--fill", str(out)]) == 0
    assert "filled" in capsys.readouterr().err
    t = load(out)
    assert list(np.flatnonzero(status(t))) == list(range(10, 15))
    bad = {int(p): str(m) for p, k, m in zip(t["events"]["point_id"], t["events"]["kind"],
                                             t["events"]["message"], strict=True) if k == "bad"}
    assert "eiger_0002.h5 of the virtual dataset is missing" in bad[12]
    listed = summary(out)["bad_points"]  # inspect: the points still bad, not the filled
    assert [b["point_id"] for b in listed] == list(range(10, 15))
    assert "eiger_0002.h5" in listed[2]["reason"]
    (tmp_path / "away_2.h5").rename(tmp_path / "eiger_0002.h5")
    capsys.readouterr()
    assert main(["replay", "--fill", str(out), "--quiet"]) == 0  # as the file recorded them
    said = capsys.readouterr().err
    assert "as recorded there: --images " in said and "/1.1/measurement/eiger" in said
    assert "--motor omega=/1.1/measurement/rot_center" in said
    assert (status(load(out)) == 0).all()
    s = summary(out)
    assert s["points_bad"] == 0 and s["bad_points"] == []
    assert s["events"]["bad"] == 15  # the history stays
    assert "bad         points" not in format_summary(s)
    same(load(whole), load(out))


def test_fill_from_a_recording_without_times_keeps_the_times_the_file_holds(tmp_path):
    """The file's points have times (as a live run gives them), the recording has none
    (frames and motors only): after the fill the points the file held keep their time,
    it wiped every one; the filled points have none to get."""
    out = tmp_path / "scan.h5"
    args = _lima_master(tmp_path)
    (tmp_path / "eiger_0001.h5").rename(tmp_path / "away.h5")
    assert main([*args, "--time", "range:100,1", "--output", str(out)]) == 0
    (tmp_path / "away.h5").rename(tmp_path / "eiger_0001.h5")
    assert main([*args, "--fill", str(out)]) == 0
    t = load(out)["points"]
    assert (t["status"] == 0).all()
    held = np.r_[0:5, 10:20]
    assert t["time"][held].tolist() == (100.0 + held).tolist()
    assert np.isnan(t["time"][5:10]).all()


def test_simulate_wrap_makes_one_turn_over_the_points(tmp_path):
    """--wrap alone works: one turn over the points (of each row of a snake); it asked
    for an omega step no option could set."""
    import json

    import h5py

    for name, extra, per_turn in (("w.h5", ["--points", "60"], 60),
                                  ("s.h5", ["--points", "160", "--trajectory", "snake",
                                            "--rows", "8"], 20)):
        assert main(["simulate", "--output", str(tmp_path / name), "--shape", "128", "160",
                     "--spots", "2", "--wrap", "--quiet", *extra]) == 0
        with h5py.File(tmp_path / name) as f:
            start = json.loads(f["entry/start"].attrs["start_json"])
            omega = f["entry/measurement/omega"][()]
        assert start["trajectory"]["wrap"] is True
        assert abs((omega[1] - omega[0]) * per_turn) == 360.0


def test_simulate_says_how_many_rows_a_snake_needs(tmp_path, capsys):
    assert main(["simulate", "--output", str(tmp_path / "s.h5"), "--trajectory", "snake",
                 "--rows", "4", "--points", "120", "--shape", "128", "160", "--spots", "2",
                 "--quiet"]) == 2
    assert "give more rows (--rows 8 or more" in capsys.readouterr().err


def test_simulate_a_snake_or_grid_without_rows(tmp_path, capsys):
    """The documented command with no --rows works: the fewest rows whose dty span holds
    the spots, as many points a row as they need in omega (or rows dividing --points);
    an explicit too-small --rows is still refused with the rows it needs."""
    import json

    import h5py

    def made(name, *extra):
        out = tmp_path / name
        assert main(["simulate", "--output", str(out), "--quiet", *extra]) == 0, \
            capsys.readouterr().err
        with h5py.File(out) as f:
            trajectory = json.loads(f["entry/start"].attrs["start_json"])["trajectory"]
            dty = f["entry/measurement/dty"][()]
        return trajectory, len(dty), len(set(dty.tolist()))

    for kind in ("snake", "grid"):  # the defaults: 256 x 256, 40 spots
        assert made(f"{kind}.h5", "--trajectory", kind) == (
            {"kind": kind, "fast": "omega", "nfast": 20, "slow": "dty"}, 280, 14)
    small = ["--trajectory", "snake", "--shape", "128", "160", "--spots", "2"]
    assert made("few.h5", *small)[1:] == (112, 8)  # no touching pair: fewer rows
    assert made("300.h5", *small, "--points", "300")[1:] == (300, 10)  # 10 divides 300
    assert made("rows.h5", *small, "--rows", "9")[1:] == (9 * 14, 9)  # the rows given
    for extra, said in ((["--rows", "4"], "give more rows (--rows 8 or more"),
                        (["--points", "7"], "a snake of 7 points cannot have the 8 rows")):
        assert main(["simulate", "--output", str(tmp_path / "no.h5"), "--quiet", *small,
                     *extra]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "no.h5").exists()


def test_simulate_says_a_row_is_too_short(tmp_path, capsys):
    assert main(["simulate", "--output", str(tmp_path / "s.h5"), "--trajectory", "snake",
                 "--rows", "14", "--points", "140", "--shape", "128", "160", "--spots", "2",
                 "--quiet"]) == 2
    assert "9 steps of omega a row are too few" in capsys.readouterr().err


def test_simulate_a_five_row_grid_with_touching_spots(tmp_path, capsys):
    """A 5-row grid was refused with only 'give more rows (--rows 14 or more': the spots'
    dty widths (sigma_dty up to 1.5 rows, 2 sigmas inside each end) and a touching pair's
    displacement need 11.25 rows of span, and no option set the widths. The error names
    the three ways out with numbers that fit; narrower spots make the 5 rows, pairs too."""
    import h5py

    out = tmp_path / "g.h5"
    grid = ["simulate", "--output", str(out), "--trajectory", "grid", "--rows", "5", "--quiet"]
    assert main(grid) == 2
    said = capsys.readouterr().err
    assert "give more rows (--rows 14 or more, with npoints a multiple), no touching pairs " \
           "(--touching 0: --rows 8) or spots narrower in dty (--sigma-dty LO HI with HI at " \
           "most 0.53, e.g. --sigma-dty 0.28 0.53)" in said
    assert main([*grid, "--sigma-dty", "0.28", "0.54"]) == 2 and not out.exists()
    capsys.readouterr()
    assert main([*grid, "--sigma-dty", "0.28", "0.53"]) == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        dty, truth = f["entry/measurement/dty"][()], f["entry/truth"]
        assert sorted(set(dty.tolist())) == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert truth["touching"][()].sum() >= 8 and (truth["partner"][()] >= 0).sum() == 8
        width = truth["sigma_dty"][()]
        assert width.min() >= 0.28 and width.max() <= 0.53
        assert (truth["dty"][()] - 2 * width >= 0).all() and (truth["dty"][()] + 2 * width
                                                              <= 4).all()
