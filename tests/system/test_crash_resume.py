"""kill -9 at random instants, restart, and the file equals the uninterrupted run.

The daemon (a real subprocess) is killed with SIGKILL while a scan streams in;
the restarted daemon continues the scan's file from its last checkpoint when
the scan's points (or its start) arrive again. Points lost while it was down
are recorded as missing; sent again from the recording before the end, they
are filled in and the file equals an uninterrupted run, table for table.
`peakstream replay --resume` does the same for a killed replay. A new acquisition
that reuses the scan id is never appended to the crashed file.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.core.table import read_table
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.file import write_scan
from stream.store.checkpoint import open_h5
from stream.store.reader import summary
from stream.store.rows import POINT_STATUS
from tests.support.daemon import (
    Sender,
    completed,
    daemon_config,
    file_status,
    wait_until,
)
from tests.support.paths import ROOT

pytestmark = pytest.mark.system  # daemons killed -9 and restarted

SIM = SimConfig(npoints=120, shape=(128, 160), spots=40, seed=7)
TABLES = ("peaks2d", "overlaps", "cliques", "sparse", "shares")
EXTRA = '[output]\nflush_interval = 0.1\n[workers]\nkind = "inline"\n'


def tables(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with open_h5(path) as f:
        entry = f["entry"]
        det = next(k for k in entry if k not in ("process", "points"))
        out = {t: read_table(entry[det][t]) for t in TABLES}
        out["points"] = read_table(entry["points"])
        out["events"] = read_table(entry["process/events"])
    return out


def stored_points(path: Path) -> int:
    """Points in the file as of its last checkpoint (0 while it does not exist)."""
    try:
        with open_h5(path) as f:
            return int(f["entry/points/point_id"].shape[0])
    except (OSError, KeyError):
        return 0


def assert_same(a: dict, b: dict) -> None:
    for t in TABLES:
        assert sorted(a[t]) == sorted(b[t]), t
        for col in a[t]:
            x, y = a[t][col], b[t][col]
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{t}/{col}"


def reference(start, tmp_path: Path, cfg: Path, sim: Simulation) -> dict:
    d = start(cfg, output=tmp_path / "ref")
    s = Sender(d.endpoint, sim)
    s.scan("scan")
    s.close()
    completed(tmp_path / "ref" / "scan.h5")
    return tables(tmp_path / "ref" / "scan.h5")


def test_daemon_killed_three_times_then_filled_in_equals_the_uninterrupted_run(daemon,
                                                                                tmp_path):
    sim = Simulation(SIM)
    cfg = daemon_config(tmp_path, EXTRA)
    ref = reference(daemon, tmp_path, cfg, sim)
    out = tmp_path / "out"
    path = out / "scan.h5"
    rng = random.Random(11)
    d = daemon(cfg, output=out)
    s = Sender(d.endpoint, sim)
    s.start("scan")
    sent = 0
    for _ in range(3):  # send some points, kill at a random instant, restart
        k = rng.randint(15, 30)
        s.points("scan", range(sent, sent + k), rate=400)
        sent += k
        wait_until(lambda: stored_points(path) > 0, 60, 0.05, "a first checkpoint")
        time.sleep(rng.uniform(0.0, 0.3))
        d.proc.kill()
        d.proc.wait(30)
        s.close()
        d = daemon(cfg, output=out)
        s = Sender(d.endpoint, sim)
    # the recording at hand: every point again, then the end
    s.start("scan")
    s.points("scan", range(SIM.npoints))
    s.end("scan")
    s.close()
    assert completed(path) == "success"
    got = tables(path)
    assert_same(got, ref)
    assert np.array_equal(got["points"]["point_id"], np.arange(SIM.npoints))
    assert (got["points"]["status"] == POINT_STATUS.index("ok")).all()
    assert "resumed" in set(got["events"]["kind"])
    assert sorted(p.name for p in out.glob("*.h5")) == ["scan.h5"]  # no second file


def test_points_lost_while_the_daemon_was_down_are_recorded_missing(daemon, tmp_path):
    sim = Simulation(SIM)
    cfg = daemon_config(tmp_path, EXTRA)
    ref = reference(daemon, tmp_path, cfg, sim)
    out = tmp_path / "out"
    path = out / "scan.h5"
    d = daemon(cfg, output=out)
    s = Sender(d.endpoint, sim)
    s.start("scan")
    s.points("scan", range(50), rate=400)
    wait_until(lambda: stored_points(path) >= 20, 60, 0.05, "20 points stored")
    d.proc.kill()
    d.proc.wait(30)
    s.close()
    kept = stored_points(path)  # points after the last checkpoint died with the process
    d = daemon(cfg, output=out)
    s = Sender(d.endpoint, sim)
    s.points("scan", range(60, SIM.npoints))  # the acquisition goes on (50-59 were sent
    # while it was down); no start again: the first point resumes the file
    s.end("scan")
    s.close()
    assert completed(path) == "incomplete"  # never a silent success
    got = tables(path)
    status = dict(zip(got["points"]["point_id"].tolist(), got["points"]["status"].tolist(),
                      strict=True))
    assert sorted(status) == list(range(SIM.npoints))
    ok, missing = POINT_STATUS.index("ok"), POINT_STATUS.index("missing")
    assert all(status[p] == ok for p in range(kept))  # stored before the kill: kept
    assert all(status[p] == missing for p in range(kept, 60))  # lost
    assert all(status[p] == ok for p in range(60, SIM.npoints))
    # each point's 2D peaks are the uninterrupted run's
    pid, rpid = got["peaks2d"]["point_id"], ref["peaks2d"]["point_id"]
    for p in [p for p, st in status.items() if st == ok]:
        for col in ("npx", "sum_intensity", "s_raw", "f_raw"):
            assert np.array_equal(got["peaks2d"][col][pid == p], ref["peaks2d"][col][rpid == p])


def test_killed_at_random_instants_ended_incomplete_then_filled_equals_the_uninterrupted_run(
        daemon, tmp_path):
    """Killed twice at random instants while the scan streams in, restarted each time;
    the acquisition goes on (points sent while it was down are lost) and the scan ends
    incomplete. `peakstream replay RECORDING --fill FILE` then completes it: every table
    equals the uninterrupted run's, and the file records the fill."""
    sim = Simulation(SIM)
    rec = tmp_path / "rec.h5"
    write_scan(sim, rec, "scan")
    cfg = daemon_config(tmp_path, EXTRA)
    ref = reference(daemon, tmp_path, cfg, sim)
    out = tmp_path / "out"
    path = out / "scan.h5"
    rng = random.Random(23)
    d = daemon(cfg, output=out)
    s = Sender(d.endpoint, sim)
    s.start("scan")
    sent = 0
    for _ in range(2):
        k = rng.randint(20, 35)
        s.points("scan", range(sent, sent + k), rate=400)
        sent += k
        wait_until(lambda: stored_points(path) > 0, 60, 0.05, "a first checkpoint")
        time.sleep(rng.uniform(0.0, 0.3))
        d.proc.kill()
        d.proc.wait(30)
        s.close()
        sent += 10  # sent while the daemon was down: lost
        d = daemon(cfg, output=out)
        s = Sender(d.endpoint, sim)
    s.points("scan", range(sent, SIM.npoints))
    s.end("scan")
    s.close()
    assert completed(path) == "incomplete"
    d.signal()
    d.wait()
    before = summary(path)
    assert before["points_missing"] > 0 and before["missing_points"]
    r = peakstream("replay", str(rec), "--fill", str(path), "--quiet")
    err = r.communicate(timeout=600)[1]
    assert r.returncode == 0, err
    got = tables(path)
    assert_same(got, ref)
    for col in ref["points"]:
        assert np.array_equal(got["points"][col], ref["points"][col]), col
    after = summary(path)
    assert after["status"] == "success" and after["missing_points"] == []
    (fill,) = after["filled"]
    assert fill["points"] == before["missing_points"] and fill["inputs"] == [str(rec)]
    assert "fill" in set(got["events"]["kind"]) and "resume" in set(got["events"]["kind"])
    assert (out / "scan.h5.before-fill").exists()
    # nothing is left to fill
    r = peakstream("replay", str(rec), "--fill", str(path), "--quiet")
    assert r.wait(600) == 2 and "nothing to fill" in r.stderr.read()


def peakstream(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("split", ["local_max", "pixels"])
def test_replay_killed_then_resumed_equals_the_uninterrupted_replay(tmp_path, split):
    """Point by point (the live lane's collector): with split "pixels" its separation
    runs in background threads, and a checkpoint's state waits for them."""
    rec = tmp_path / "rec.h5"
    sim = SimConfig(npoints=600, shape=(512, 512), spots=120, seed=5, touching_fraction=0.3)
    write_scan(Simulation(sim), rec, "rec")
    config = str(daemon_config(tmp_path, f'[output]\nflush_interval = 0.05\n'
                                         f'[linker]\nsplit = "{split}"\n'))
    common = ["replay", str(rec), "--config", config, "--per-point", "--quiet"]
    ref = tmp_path / "ref.h5"
    assert peakstream(*common, "--output", str(ref)).wait(300) == 0
    out = tmp_path / "out.h5"
    p = peakstream(*common, "--output", str(out))
    try:
        wait_until(lambda: stored_points(out) > 0 or p.poll() is not None, 120, 0.02,
                   "the replay's first checkpoint")
        time.sleep(random.Random(3).uniform(0.0, 0.1))
        p.kill()
        p.wait(30)
    finally:
        p.kill()
    with open_h5(out) as f:
        if f["entry"].attrs["status"] != "running":
            pytest.fail("the replay ended before it could be killed; make the scan longer")
    assert 0 < stored_points(out) < sim.npoints
    r = peakstream(*common, "--output", str(out), "--resume")
    err = r.communicate(timeout=300)[1]
    assert r.returncode == 0, err
    assert_same(tables(out), tables(ref))
    if split == "pixels":  # spots were separated: pixels divided between cliques
        assert (tables(ref)["shares"]["share"] < 1).any()
    # a file that has ended is not resumed again
    r = peakstream(*common, "--output", str(out), "--resume")
    err = r.communicate(timeout=300)[1]
    assert r.returncode != 0 and "resume" in err


def test_disk_full_fails_that_scan_and_the_next_scan_is_written(daemon, tmp_path):
    """A daemon whose files may not grow past 6.5 MiB (a small scan takes ~6.1 MiB,
    the big one ~7.3): writes fail with EFBIG, as on a full disk. The big scan ends as
    fail with the reason and its file reads as of its last checkpoint; the daemon goes
    on and a small scan after it is written whole."""
    cfg = daemon_config(tmp_path, EXTRA)
    d = daemon(cfg, output=tmp_path / "out", fsize=13 << 19)
    big = Simulation(SimConfig(npoints=1000, shape=(512, 512), spots=400, seed=2))
    s = Sender(d.endpoint, big)
    s.scan("big")
    s.close()
    path = tmp_path / "out" / "big.h5"
    wait_until(lambda: d.status()["scans_done"] >= 1, 120, 0.1, "the big scan to end")
    with open_h5(path) as f:
        assert f["entry"].attrs["status"] == "fail"
        assert "too large" in str(f["entry"].attrs["reason"]).lower()
        n = f["entry/points/point_id"].shape[0]
        assert 0 < n < big.config.npoints  # what the file could hold, readable
    small = Simulation(SimConfig(npoints=20, shape=(128, 160), spots=8, seed=4))
    s = Sender(d.endpoint, small)
    s.scan("small")
    s.close()
    assert completed(tmp_path / "out" / "small.h5") == "success"
    assert d.proc.poll() is None  # still running
    assert tables(tmp_path / "out" / "small.h5")["points"]["point_id"].tolist() == list(
        range(20))


def crash_mid_scan(daemon, cfg, out, sim: Simulation, scan_id: str, sent: int, stored: int):
    """A daemon that took `sent` points of a scan and checkpointed at least `stored` of
    them, killed -9; the file it left."""
    d = daemon(cfg, output=out)
    s = Sender(d.endpoint, sim)
    s.start(scan_id)
    s.points(scan_id, range(sent), rate=400)
    path = out / f"{scan_id}.h5"
    wait_until(lambda: stored_points(path) >= stored, 60, 0.05, f"{stored} points stored")
    d.proc.kill()
    d.proc.wait(30)
    s.close()
    return path


def resent_to_a_new_file(daemon, cfg, out, sim: Simulation, scan_id: str):
    """A daemon restarted after `crash_mid_scan`, the whole scan sent again: it must go
    to a new file, complete. The daemon and that file."""
    d = daemon(cfg, output=out)
    s = Sender(d.endpoint, sim)
    s.scan(scan_id)
    s.close()
    new = out / f"{scan_id}-1.h5"
    assert completed(new) == "success"
    return d, new


def test_another_acquisition_with_the_same_scan_id_goes_to_a_new_file(daemon, tmp_path):
    cfg = daemon_config(tmp_path, EXTRA)
    out = tmp_path / "out"
    old_sim = Simulation(SIM)
    path = crash_mid_scan(daemon, cfg, out, old_sim, "orphan", 40, 10)
    before = tables(path)
    kept = len(before["points"]["point_id"])
    # the daemon again, and a new acquisition (other spots, other monitor) with the same id
    new_sim = Simulation(dataclasses.replace(SIM, seed=SIM.seed + 1))
    d, new = resent_to_a_new_file(daemon, cfg, out, new_sim, "orphan")
    # the new file: every point of the new acquisition, none of the old one's
    got = tables(new)
    assert np.array_equal(got["points"]["point_id"], np.arange(SIM.npoints))
    assert (got["points"]["status"] == POINT_STATUS.index("ok")).all()
    monitor = [new_sim.monitor_value(i) for i in range(SIM.npoints)]
    assert np.array_equal(got["points"]["counters/monitor"], monitor)
    # the old file as the crash left it, with an event saying why it was not resumed
    after = tables(path)
    assert len(after["points"]["point_id"]) == kept
    for name in ("points", "peaks2d", "sparse"):
        for col, values in before[name].items():
            assert np.array_equal(after[name][col], values,
                                  equal_nan=values.dtype.kind == "f"), (name, col)
    kinds = list(after["events"]["kind"])
    assert "resume" not in kinds and kinds[-1] == "not_resumed"
    assert "another acquisition" in after["events"]["message"][-1]
    assert "another acquisition" in d.status()["last_error"]
    assert "another acquisition" in d.text()
    assert sorted(p.name for p in out.glob("*.h5")) == ["orphan-1.h5", "orphan.h5"]


def test_a_restart_with_an_edited_config_says_once_that_the_scan_is_not_resumed(daemon,
                                                                                 tmp_path):
    cfg = daemon_config(tmp_path, EXTRA)
    out = tmp_path / "out"
    sim = Simulation(SIM)
    path = crash_mid_scan(daemon, cfg, out, sim, "cfgchg", 40, 10)
    before = tables(path)
    edited = daemon_config(tmp_path, EXTRA + "[linker]\nfraction = 0.5\n", name="edited.toml")
    d = daemon(edited, output=out)
    # at start-up: the file the crash left open, and that this config cannot continue it
    assert "1 scan file(s) a crash left open" in d.text()
    assert f"{path} (scan 'cfgchg', another config: not resumed)" in d.text()
    s = Sender(d.endpoint, sim)
    s.points("cfgchg", range(40, SIM.npoints))  # the rest of the scan, no start again
    s.end("cfgchg")
    s.close()
    rest = SIM.npoints - 40 + 1  # its points and its end, all refused
    status = wait_until(lambda: (st := d.status())["rejected"] >= rest and st, 120, 0.1,
                        "the rest of the scan refused")
    assert f"{path} was not resumed" in status["last_error"]
    assert "another processing config" in status["last_error"]
    log = d.text()
    assert log.count("was not resumed") == 1 and log.count("no scan is open") <= 1
    assert file_status(path) == "running"  # left for a restart with its config, or a fill
    assert np.array_equal(tables(path)["points"]["point_id"], before["points"]["point_id"])


def test_a_restart_after_the_dark_was_taken_again_does_not_mix_two_darks(daemon, tmp_path):
    """The config's text is the same, its dark.npy is not: the crashed file (made with
    the old dark) is not continued with the new one; the resent scan goes to a new file
    made with the new dark throughout, and the log says which file changed."""
    np.save(tmp_path / "dark.npy", np.zeros(SIM.shape, np.float32))
    chain = ('[[node]]\nkind = "correct"\ndark = "dark.npy"\n[[node]]\nkind = "normalise"\n'
             'counter = "monitor"\nreference = 10000.0\n[[node]]\nkind = "threshold"\n'
             'cut = 40.0\n[[node]]\nkind = "label"\nmin_pixels = 2\n[[node]]\n'
             'kind = "properties"\n')
    cfg = daemon_config(tmp_path, EXTRA + chain)  # beside dark.npy
    out = tmp_path / "out"
    sim = Simulation(SIM)
    path = crash_mid_scan(daemon, cfg, out, sim, "recal", 40, 10)
    before = tables(path)
    np.save(tmp_path / "dark.npy", np.full(SIM.shape, 30.0, np.float32))  # taken again
    d, new = resent_to_a_new_file(daemon, cfg, out, sim, "recal")
    log = d.text()
    assert f"{path} is not resumed" in log and "dark.npy" in log and "another content" in log
    got = tables(new)
    assert "resume" not in set(got["events"]["kind"])
    assert np.array_equal(got["points"]["point_id"], np.arange(SIM.npoints))
    assert file_status(path) == "running"  # as the crash left it: for its dark, or a fill
    assert np.array_equal(tables(path)["points"]["point_id"], before["points"]["point_id"])
    assert summary(new)["calibration"]["files"][0]["sha256"] != \
        summary(path)["calibration"]["files"][0]["sha256"]
