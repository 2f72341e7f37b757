"""`peakstream daemon` as a real subprocess: scan after scan, file names from the pattern,
never overwriting, clean shutdown on SIGTERM, rotated logs, an unusable output directory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.sources.simulate import Simulation
from stream.store.naming import Namer
from stream.store.reader import summary
from tests.support.daemon import (
    SIMCONF,
    Sender,
    completed,
    daemon_config,
    file_status,
    scans_done,
    wait_until,
)
from tests.support.flow import reference_tables, tables
from tests.support.paths import ROOT

pytestmark = pytest.mark.system  # `peakstream daemon` subprocesses, signals

PATTERN = "{sample}_{scan_number:03d}_{scan_id}.h5"


def test_two_scans_back_to_back_named_by_the_pattern(daemon, tmp_path):
    config = daemon_config(tmp_path, f'[output]\npattern = "{PATTERN}"\n'
                                     "[daemon]\nlog_max_bytes = 600\nlog_backups = 2\n")
    out = tmp_path / "out"
    out.mkdir()
    taken = out / "unknown_007_first.h5"  # an earlier session's file: numbers go on from 8
    taken.write_bytes(b"an earlier file, not to be touched")
    d = daemon(config)
    # the first scan from the simulator's own sender process, the second from here
    sent = subprocess.run([sys.executable, "-m", "stream.cli", "simulate", "--quiet", "--send",
                           d.endpoint, "--points", "60", "--shape", "128", "160", "--spots",
                           "24", "--seed", "3", "--scan-id", "first"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert sent.returncode == 0, sent.stderr
    scans_done(d, 1)
    sender = Sender(d.endpoint)
    sender.scan("second", sample="Si powder/../x")  # made safe for a file name
    status = scans_done(d, 2)
    sender.close()
    assert taken.read_bytes() == b"an earlier file, not to be touched"
    first, second = out / "unknown_008_first.h5", out / "Si_powder_x_009_second.h5"
    for path, scan_id in ((first, "first"), (second, "second")):
        s = summary(path)
        assert (s["status"], s["scan_id"], s["points"], s["points_ok"]) == \
            ("success", scan_id, 60, 60), path
        assert s["cliques"] > 10
    assert status["last_scan"]["file"] == str(second)
    assert status["gc_frozen"] > 1000  # modules and kernels left out of later collections
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(
        [taken.name, first.name, second.name])
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    # logs: on stderr and in DIR/peakstream.log, rotated at 600 bytes
    log = out / "peakstream.log"
    assert d.logfile == str(log)
    assert (out / "peakstream.log.1").exists()
    assert log.stat().st_size <= 600 and (out / "peakstream.log.1").stat().st_size <= 600
    assert not (out / "peakstream.log.3").exists()  # log_backups = 2
    logged = "".join(p.read_text() for p in out.glob("peakstream.log*"))
    assert "peakstream daemon stopped after 2 scan(s)" in logged
    assert "scan second ended: success" in d.text()


def test_names_never_overwrite_and_numbers_go_on_after_a_restart(tmp_path):
    plain = Namer(tmp_path)
    (tmp_path / "s1.h5").write_bytes(b"x")
    (tmp_path / "s1-1.h5").write_bytes(b"x")
    assert plain.path("s1") == tmp_path / "s1-2.h5"
    assert plain.path("../../etc/passwd") == tmp_path / "etc_passwd.h5"
    numbered = Namer(tmp_path, "{sample}/{scan_number:04d}.h5")
    first = numbered.path("a", {"sample": "Fe"})
    assert first == tmp_path / "Fe" / "0001.h5" and first.parent.is_dir()
    first.write_bytes(b"x")
    assert numbered.path("b", {"sample": "Fe"}) == tmp_path / "Fe" / "0002.h5"  # this session
    (tmp_path / "Fe" / "0041-1.h5").write_bytes(b"x")
    again = Namer(tmp_path, "{sample}/{scan_number:04d}.h5")  # a restarted daemon
    assert again.path("c", {"sample": "Fe"}) == tmp_path / "Fe" / "0042.h5"
    assert again.path("d", {}) == tmp_path / "unknown" / "0001.h5"
    dated = Namer(tmp_path, "{date}_{time}_{scan_id}.h5").path("e", now=0.0)
    assert dated.name == time.strftime("%Y%m%d_%H%M%S_e.h5", time.localtime(0.0))


def test_sigterm_mid_scan_finishes_the_scan_and_exits_0(daemon, tmp_path):
    d = daemon(daemon_config(tmp_path))
    sender = Sender(d.endpoint)
    sender.start("halfway")
    sender.points("halfway", range(30))
    wait_until(lambda: (d.status().get("scan") or {}).get("linked", 0) >= 30,
               why="30 points linked")
    d.signal(signal.SIGTERM)
    wait_until(lambda: d.status()["state"] == "stopping", why="state stopping")
    sender.points("halfway", range(30, 60))  # the scan in progress goes on to its end
    sender.end("halfway")
    assert d.wait() == 0
    sender.close()
    s = summary(tmp_path / "out" / "halfway.h5")
    assert (s["status"], s["points"], s["points_ok"], s["points_missing"]) == \
        ("success", 60, 60, 0)
    assert "stop requested: finishing scan halfway" in d.text()


def test_second_signal_aborts_the_open_scan_writes_it_and_exits_0(daemon, tmp_path):
    d = daemon(daemon_config(tmp_path))
    sender = Sender(d.endpoint)
    sender.start("cut-short")
    sender.points("cut-short", range(20))
    wait_until(lambda: (d.status().get("scan") or {}).get("linked", 0) >= 20,
               why="20 points linked")
    d.signal(signal.SIGTERM)
    wait_until(lambda: d.status()["state"] == "stopping", why="state stopping")
    d.signal(signal.SIGINT)
    assert d.wait() == 0
    sender.close()
    s = summary(tmp_path / "out" / "cut-short.h5")
    assert s["status"] == "abort" and "second stop signal" in s["reason"]
    assert s["points_ok"] == 20


def test_unusable_output_directory_refuses_the_scan_and_the_next_one_runs(daemon, tmp_path):
    out = tmp_path / "out"
    out.write_text("a regular file where the output directory should be")
    config = daemon_config(tmp_path, f'[daemon]\nlog_file = "{tmp_path / "logs" / "d.log"}"\n')
    d = daemon(config, output=out)
    sender = Sender(d.endpoint)
    sender.scan("refused")
    status = wait_until(lambda: (s := d.status())["last_error"] and s, why="the refusal")
    assert "refused" in status["last_error"] and str(out) in status["last_error"]
    assert status["state"] == "idle" and status["scan"] is None
    wait_until(lambda: d.status()["rejected"] >= 1 + SIMCONF.npoints + 1,
               why="its points dropped")  # start, points and end: counted, not processed
    out.unlink()  # the directory can be made now
    sender.scan("accepted")
    assert completed(out / "accepted.h5") == "success"
    sender.close()
    assert file_status(out / "refused.h5") is None
    assert d.proc.poll() is None  # it kept running throughout
    text = (tmp_path / "logs" / "d.log").read_text()
    assert "scan refused: start refused: cannot create" in text
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


@pytest.mark.parametrize("version, encoding", [(2, "bslz4"), (1, "raw")])
def test_dectris_detector_scan_equals_our_protocol(daemon, tmp_path, version, encoding):
    """The emulated detector's frames (stream v2 bslz4 / v1 raw) with motors and monitor
    on the motor lane: the same 2D peaks and cliques as the scan sent in our protocol."""
    from stream.sources.dectris.emulator import DetectorEmulator

    emulator = DetectorEmulator(version=version, encoding=encoding)
    try:
        config = daemon_config(tmp_path, f'[source]\nkind = "dectris"\n'
                                         f'detector_endpoint = "{emulator.endpoint}"\n'
                                         f"stream_version = {version}\n"
                                         'motors = ["omega"]\ncounters = ["monitor"]\n'
                                         'trajectory = {kind = "sweep", fast = "omega"}\n')
        d = daemon(config)
        emulator.connect_motors(d.endpoint)  # the daemon's --listen: the motor lane
        sim = Simulation(SIMCONF)
        n = SIMCONF.npoints
        emulator.send_series([sim.frame(i) for i in range(n)],
                             motors=[sim.motors(i) for i in range(n)],
                             counters=[{"monitor": sim.monitor_value(i)} for i in range(n)])
        status = scans_done(d, 1)
    finally:
        emulator.close()
    last = status["last_scan"]
    assert (last["status"], last["linked"], last["missing"], last["bad"]) == \
        ("success", n, 0, 0)
    assert status["source"]["kind"] == "dectris" and status["source"]["joined"] == n
    got, ref = tables(Path(last["file"])), reference_tables(tmp_path)
    assert len(ref["cliques"]["clique_id"]) > 10
    for name in ("peaks2d", "cliques", "overlaps"):
        for col in ref[name]:
            a, b = got[name][col], ref[name][col]
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (name, col)
