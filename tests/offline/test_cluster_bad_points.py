"""Batch replay of recordings with bad points (a Lima file gone or cut short): on a
cluster, whole or in chunks, the same incomplete file as a serial replay."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.core.scan import Scan
from stream.sources.files.common import error_point
from stream.store.reader import summary
from tests.support.files import SIMCONF, events, run, sim, status, write_lima_master
from tests.support.flow import assert_same_tables, tables
from tests.support.paths import CONFIGS

COMMON = ["--images", "measurement/eiger", "--motor", "omega=measurement/rot_center",
          "--counter", "monitor=measurement/mon", "--config", str(CONFIGS / "simulated.toml"),
          "--quiet"]


def broken_masters(tmp_path: Path) -> list[str]:
    """part/part.h5: 20 frames in Lima files of 5, the third file gone (frames 10..14,
    a whole chunk of 5), the fourth holding 2 of its 5 (frames 17..19 bad); gone/gone.h5:
    every Lima file gone (no point readable)."""
    out = []
    for name, lost in (("part", [2]), ("gone", [0, 1, 2, 3])):
        (tmp_path / name).mkdir()
        master = write_lima_master(tmp_path / name, 5, held={3: 2} if name == "part" else {})
        for k in lost:
            os.remove(tmp_path / name / f"eiger_{k:04d}.h5")
        out.append(str(master.rename(master.with_name(f"{name}.h5"))))
    return out


@pytest.mark.system
def test_a_scan_in_chunks_with_bad_points_gives_the_serial_incomplete_file(tmp_path, capsys):
    """A chunk with bad points is merged with them (it made the whole scan fail, with no
    file, and a rerun failed the same way): the scan's file is the serial replay's,
    incomplete, its bad points with their reasons under their ids in the scan; a scan
    whose every point is bad fails and leaves no file, chunk files neither."""
    masters = broken_masters(tmp_path)
    main(["replay", *masters, *COMMON, "--output", str(tmp_path / "serial")])
    main(["replay", *masters, *COMMON, "--output", str(tmp_path / "chunks"),
          "--cluster", "local:2", "--chunk-points", "5"])
    out, err = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "chunks")) == ["part_1.1.h5"]  # no chunk left
    serial, chunked = tables(tmp_path / "serial" / "part_1.1.h5"), \
        tables(tmp_path / "chunks" / "part_1.1.h5")
    assert_same_tables(serial, chunked)
    assert list(np.flatnonzero(status(chunked) == 2)) == [10, 11, 12, 13, 14, 17, 18, 19]
    assert "frame 17" in events(chunked)[17] and "eiger_0002.h5" in events(chunked)[10]
    with h5py.File(tmp_path / "serial" / "part_1.1.h5") as a, \
            h5py.File(tmp_path / "chunks" / "part_1.1.h5") as b:
        assert b["entry"].attrs["status"] == "incomplete"
        assert a["entry"].attrs["reason"] == b["entry"].attrs["reason"]
        assert "(the first: point 10: " in b["entry"].attrs["reason"]
    assert "part_1.1: incomplete, 20 points" in err
    assert "gone_1.1: fail, 0 points" in err and "all 20 point(s) received were bad " \
        "(the first: point 0: " in err and f"{tmp_path / 'chunks' / 'gone_1.1.h5'}" not in err


@pytest.mark.system
def test_an_incomplete_scan_exits_0_and_a_rerun_keeps_it_until_filled(tmp_path, capsys):
    """As a serial replay: an incomplete scan is done (exit 0, it was 1 on a cluster),
    and a rerun skips its file (it did it again, and exited 1, on every rerun: never
    done while a Lima file stays gone); --fill completes it once the frames are back,
    and a rerun skips the filled file too."""
    master = broken_masters(tmp_path)[0]
    out = tmp_path / "out"
    batch = ["replay", master, *COMMON, "--output", str(out), "--cluster", "local:2"]
    assert main(batch) == 0
    assert "part_1.1: incomplete, 20 points" in capsys.readouterr().err
    made = (out / "part_1.1.h5").stat().st_mtime_ns
    assert main(batch) == 0
    said, err = capsys.readouterr()
    assert f"skipped, {out / 'part_1.1.h5'} is finished already (incomplete: replay --fill " \
        "completes it)" in err and "1 skipped" in said
    assert (out / "part_1.1.h5").stat().st_mtime_ns == made
    write_lima_master(tmp_path / "part", 5)  # the Lima files back
    assert main(["replay", "--images", f"{master}::/1.1/measurement/eiger", "--motor",
                 "omega=/1.1/measurement/rot_center", "--counter",
                 "monitor=/1.1/measurement/mon", "--config", str(CONFIGS / "simulated.toml"),
                 "--quiet", "--fill", str(out / "part_1.1.h5")]) == 0
    with h5py.File(out / "part_1.1.h5") as f:
        assert f["entry"].attrs["status"] == "success"
    filled = (out / "part_1.1.h5").stat().st_mtime_ns
    assert main(batch) == 0  # the fill kept what the file is made from: skipped
    assert f"skipped, {out / 'part_1.1.h5'} is finished already\n" in capsys.readouterr().err
    assert (out / "part_1.1.h5").stat().st_mtime_ns == filled


@pytest.mark.system
def test_a_chunks_log_lines_name_the_points_by_their_ids_in_the_scan(tmp_path):
    """A chunk (points 10..14 of the scan, counted from 0 in its own file) said 'scan
    part_1.1_points10-14 point 3 is bad' of the scan's point 13, which the merged file and
    inspect call 13: its lines and its reason name the scan's ids."""
    master = broken_masters(tmp_path)[0]
    done = subprocess.run([sys.executable, "-m", "stream.cli", "replay", master, *COMMON,
                           "--output", str(tmp_path / "out"), "--cluster", "local:2",
                           "--chunk-points", "5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    err = done.stderr  # the worker processes' lines too
    for chunk, point in (("10-14", 10), ("10-14", 13), ("15-19", 17), ("15-19", 19)):
        assert f"scan part_1.1_points{chunk} point {point} is bad: " in err
        assert f"frame {point}: " in err.split(f"points{chunk} point {point} is bad: ")[1]
    assert "point 0 is bad" not in err and "point 3 is bad" not in err
    assert "scan part_1.1_points10-14 ended: fail (all 5 point(s) received were bad (the " \
           "first: point 10: " in err
    assert list(np.flatnonzero(status(tables(tmp_path / "out" / "part_1.1.h5")) == 2)) == \
        [10, 11, 12, 13, 14, 17, 18, 19]


def test_a_chunks_missing_and_bad_points_are_named_by_their_ids_in_the_scan(tmp_path, caplog):
    """A start whose meta places its points in a scan (a chunk of points 80..99): its
    missing point's line and event, its bad point's line and its reason name the scan's
    ids (83, 85); the file's point_id column keeps the chunk's own (the merge shifts it)."""
    s = sim()
    start = s.start("s_1.1_points80-99")
    start = dataclasses.replace(start, meta={**start.meta, "point_offset": 80},
                                npoints=SIMCONF.npoints)
    points = (error_point(start.scan_id, i, "frame", "unreadable") if i == 5
              else s.point(i, start.scan_id) for i in range(SIMCONF.npoints) if i != 3)
    with caplog.at_level(logging.WARNING):
        got = run(start, points, tmp_path / "chunk.h5")
    said = caplog.text
    assert "point 83 missing" in said and "point 3 missing" not in said
    assert "scan s_1.1_points80-99 point 85 is bad: frame: unreadable" in said
    assert events(got, "missing") == {3: "point 83: no data received"}
    assert events(got)[5] == "frame: unreadable"
    assert "(the first: point 85: frame: unreadable)" in summary(tmp_path / "chunk.h5")["reason"]


def test_a_point_offset_that_is_no_point_id_is_none():
    """The start's meta is free-form (a sender's own keys): a point_offset that is no
    point id names the points by their own ids, it does not stop the scan."""
    start = sim().start("s")
    for value, offset in ((80, 80), ("80", 0), (True, 0), (-3, 0), (2.5, 0), (None, 0)):
        meta = {**start.meta, "point_offset": value}
        assert Scan.from_start(dataclasses.replace(start, meta=meta)).point_offset == offset
