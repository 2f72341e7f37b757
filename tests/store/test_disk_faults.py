"""Disk full mid-scan: the collector reports `failed` with the reason and never raises,
the file reads as of its last checkpoint and says "fail", and a resume continues it
once there is room again. A file that cannot be made leaves nothing behind."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys

import h5py
import pytest

from stream.store.checkpoint import JournaledFile, journal_path
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


def test_a_full_disk_leaves_the_file_failed_not_running(sweep, tmp_path):
    """On a full disk (a tmpfs half the file's size, in a mount namespace of its own)
    the scan failed but its file said `running`: mark_failed found no room for its few
    bytes. The bytes written beyond the last checkpoint are now freed first."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare to mount a small tmpfs")
    rec, _ = sweep
    whole = (rec.parent / "uninterrupted.h5").stat().st_size
    disk = tmp_path / "disk"
    disk.mkdir()
    read = ("import json, sys\nfrom stream.store.reader import summary\n"
            "s = summary(sys.argv[1])\nprint(json.dumps([s['status'], s['reason'], "
            "s['points']]))\n")
    script = ('mount -t tmpfs -o size="$4" tmpfs "$1" || exit 3\n'
              '"$2" -m tests.support.resume "$3" "$1/scan.h5"\n'
              'df -k "$1" | tail -1\n'
              '"$2" -c "$5" "$1/scan.h5"\n')
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script,
                        "sh", str(disk), sys.executable, str(rec), str(whole // 2), read],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    if r.returncode == 3:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    result, space, written = r.stdout.strip().splitlines()[-3:]
    status, reason, points = json.loads(written)
    assert json.loads(result)["status"] == "fail", r.stderr
    assert "No space left on device" in json.loads(result)["failed"]
    assert status == "fail" and "No space left on device" in reason, (status, r.stderr)
    assert 0 < points < SWEEP.npoints
    assert int(space.split()[3]) > 0  # the dead bytes were given back


def test_inspect_says_when_no_process_writes_a_running_file(sweep, tmp_path):
    """A file left `running` (its writer killed, or one that could not even mark it
    failed): inspect says no process writes it; while one does, it says nothing."""
    rec, _ = sweep
    path = tmp_path / "left.h5"
    shutil.copyfile(rec.parent / "uninterrupted.h5", path)
    jf = JournaledFile(path)
    with h5py.File(jf, "r+") as f:
        f["entry"].attrs["status"] = "running"
    jf.commit()
    jf.close()

    def inspect() -> str:
        r = subprocess.run([sys.executable, "-m", "stream.cli.main", "inspect", str(path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "running, but no process is writing it" in inspect()
    hold = ("import sys\nfrom stream.store.checkpoint import JournaledFile\n"
            "jf = JournaledFile(sys.argv[1])\nprint('held', flush=True)\nsys.stdin.read()\n")
    writer = subprocess.Popen([sys.executable, "-c", hold, str(path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "held"
        text = inspect()
        assert "running" in text and "no process is writing it" not in text
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)
