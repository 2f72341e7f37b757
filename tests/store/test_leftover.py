"""The files a crash left open, as a restarted daemon lists them at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stream.core.item import PEAK_COLUMNS, clique_columns
from stream.store.leftover import describe, open_files
from stream.store.scanfile import ScanStore
from tests.support.paths import ROOT
from tests.support.resume import config


def scan_file(path, scan_id: str, config_text: str, status: str | None = None) -> None:
    """A scan file as a crash leaves it (status running), or ended with `status`."""
    store = ScanStore(path, scan_id=scan_id, detector="d", motors=["omega"], counters=[],
                      peak_columns=PEAK_COLUMNS, clique_columns=clique_columns(["omega"]),
                      config_text=config_text)
    store.checkpoint({}, None)
    if status is None:
        store.close_unchanged()
    else:
        store.close(status)


def test_the_files_a_crash_left_open_are_listed_a_few_by_name(tmp_path):
    text = config(0.0).text()
    other = config(0.0)
    other.override("linker", "fraction", 0.5)
    (tmp_path / "day1").mkdir()
    for i in range(6):
        scan_file(tmp_path / "day1" / f"s{i}.h5", f"s{i}", text)
    scan_file(tmp_path / "edited.h5", "edited", other.text())
    scan_file(tmp_path / "done.h5", "done", text, "success")
    (tmp_path / "notes.h5").write_bytes(b"not hdf5")
    found, unchecked = open_files(tmp_path, text)
    assert unchecked == 0
    assert sorted(scan_id for _, scan_id, _ in found) == ["edited", *(f"s{i}" for i in range(6))]
    assert [same for _, scan_id, same in found if scan_id == "edited"] == [False]
    line = describe(found, unchecked, limit=5)
    assert line.startswith("7 scan file(s) a crash left open") and " and 2 more" in line
    assert line.count(".h5 (scan ") == 5
    assert "done.h5" not in line and "notes.h5" not in line
    assert "replay RECORDING --fill FILE" in line


@pytest.mark.system  # a subprocess: without the regular-file check it would block for good
def test_a_fifo_or_a_link_under_a_scan_file_name_is_never_opened(tmp_path):
    """The start-up list read the output directory with its own loop, which opened a
    FIFO planted as `x.h5` (the daemon's start-up then blocked in open) and followed
    nothing else; it now reads it as the resume side does (stream.store.outputdir)."""
    text = config(0.0).text()
    scan_file(tmp_path / "left.h5", "left", text)
    os.mkfifo(tmp_path / "fifo.h5")
    (tmp_path / "day1").mkdir()
    (tmp_path / "day1" / "link.h5").symlink_to(tmp_path / "left.h5")
    code = ("import sys\nfrom stream.store.leftover import open_files\n"
            "found, unchecked = open_files(sys.argv[1], sys.stdin.read())\n"
            "print(sorted(str(p) for p, _, _ in found), unchecked)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], input=text, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{[str(tmp_path / 'left.h5')]} 0"
