"""Disk full mid-scan: the collector reports `failed` with the reason and never raises,
the file reads as of its last checkpoint and says "fail", and a resume continues it
once there is room again. A file that cannot be made leaves nothing behind."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys

import h5py
import pytest

from stream.store.checkpoint import journal_path
from stream.store.reader import load, summary
from tests.support.paths import ROOT
from tests.support.resume import SWEEP, finish, prefix_intact, same, writer

pytestmark = pytest.mark.system  # writer subprocesses on a full disk


def file_size_limit(nbytes: int):
    """preexec_fn: files may not grow beyond `nbytes`; a write past it fails with
    EFBIG instead of killing the process (SIGXFSZ ignored)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


def test_disk_full_mid_scan_fails_the_scan_and_keeps_the_file(sweep, tmp_path):
    rec, full = sweep
    whole = (rec.parent / "uninterrupted.h5").stat().st_size
    out = tmp_path / "scan.h5"
    proc = writer(rec, out, preexec_fn=file_size_limit(whole // 2))
    result = finish(proc)
    # the writer fed every point and ended the scan: the collector never raised
    assert proc.returncode == 1 and result["status"] == "fail"
    assert "File too large" in result["failed"]
    assert result["counters"]["processed"] == SWEEP.npoints
    assert "Traceback" not in result["stderr"]
    assert not journal_path(out).exists()
    with h5py.File(out, "r") as f:  # plain h5py
        assert f["entry"].attrs["status"] == "fail"
        assert "File too large" in f["entry"].attrs["reason"]
    s = summary(out)
    assert 0 < s["points"] < SWEEP.npoints  # stopped mid-scan, at its last checkpoint
    assert s["checkpoint"]["resumable"]
    prefix_intact(load(out), full)
    # room again: the scan resumes from its last checkpoint and ends as if never stopped
    result = finish(writer(rec, out, "--resume"))
    assert result["status"] == "success" and result["resumed_at"] == s["points"]
    same(load(out), full)
    assert summary(out)["status"] == "success"


def test_no_room_for_a_new_file_leaves_nothing(tmp_path):
    code = ("from stream.store.scanfile import ScanStore\n"
            "try:\n"
            f"    ScanStore({str(tmp_path / 'scan.h5')!r}, scan_id='x', detector='d',"
            " motors=[], counters=[], peak_columns={}, clique_columns={'clique_id': 'int64'})\n"
            "except OSError as exc:\n"
            "    print(type(exc).__name__, exc.errno)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, preexec_fn=file_size_limit(2000))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OSError")  # the runner rejects the scan with it
    assert list(tmp_path.iterdir()) == []


def test_the_injected_fault_is_real(tmp_path):
    """A child's write past the limit fails with EFBIG (and does not kill it)."""
    code = (f"f = open({str(tmp_path / 'x')!r}, 'wb', buffering=0)\n"
            "assert f.write(b'0123456789') == 10\n"
            "f.write(b'!')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, preexec_fn=file_size_limit(10))
    assert r.returncode != 0 and "File too large" in r.stderr
