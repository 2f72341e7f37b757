"""Kill -9 a scan writer at random instants, resume it, and get the uninterrupted file.

The writer is `tests/support/resume.py` (a subprocess replaying a recording point by
point as the runner does, a checkpoint at every point)."""

from __future__ import annotations

import dataclasses
import random
import shutil

import h5py
import pytest

from stream.core.item import PEAK_COLUMNS, clique_columns
from stream.core.messages import End
from stream.core.messages import start_to_json as _start_json
from stream.core.scan import Scan
from stream.run.runner import ScanRunner
from stream.sources.files import open_recording
from stream.store.reader import load, summary
from stream.store.resume import ResumeError, resumable_file, resume
from stream.store.scanfile import ScanStore
from stream.wire.codec import encode
from tests.support.resume import (
    SWEEP,
    TABLES,
    config,
    finish,
    kill_after,
    read_crashed,
    same,
    write,
    writer,
)


def test_writer_writes_what_the_runner_writes(sweep, tmp_path):
    rec, full = sweep
    start, points = open_recording([str(rec)])
    runner = ScanRunner(config(1.0), output_file=tmp_path / "runner.h5")
    runner.handle(encode(start))
    for p in points:
        runner.handle(encode(p))
    runner.handle(encode(End(start.scan_id, "success", SWEEP.npoints)))
    runner.close()
    same(load(tmp_path / "runner.h5"), full, TABLES + ("points",))


@pytest.mark.system
@pytest.mark.parametrize("trial", range(5))
def test_kill_at_a_random_instant_then_resume_equals_uninterrupted(sweep, tmp_path, trial):
    rec, full = sweep
    out = tmp_path / "scan.h5"
    rng = random.Random(trial)
    # trial 0 dies anywhere from its launch (store creation included); the others while
    # their points go through
    kill_after(writer(rec, out, "--delay", "0.01"), rng.uniform(0, 1.5 if trial else 2.5),
               after_started=trial > 0)
    if out.exists() and summary(out)["status"] == "success":  # the kill came too late
        same(load(out), full)
        return
    at = read_crashed(out, full)
    result = finish(writer(rec, out, "--resume"))
    assert result["status"] == "success" and result["resumed_at"] == at
    final = load(out)
    same(final, full)
    assert (final["points"]["status"] == 0).all()
    assert len(final["points"]["point_id"]) == SWEEP.npoints


def test_resume_of_a_file_killed_before_its_first_checkpoint_with_points(sweep, tmp_path):
    rec, full = sweep
    out = tmp_path / "scan.h5"
    start, _ = open_recording([str(rec)])
    scan = Scan.from_start(start)
    cfg = config(0.0)
    store = ScanStore(out, scan_id=start.scan_id, detector="eiger", motors=start.motors,
                      counters=start.counters, peak_columns=PEAK_COLUMNS,
                      clique_columns=clique_columns(start.motors), config_text=cfg.text(),
                      start_json=_start_json(start), trajectory=scan.trajectory.describe())
    store.close_unchanged()  # what a kill right after the file was made leaves
    assert summary(out)["checkpoint"]["resume_at"] == 0
    result = write(rec, out, resuming=True)
    assert result["status"] == "success" and result["resumed_at"] == 0
    same(load(out), full)


@pytest.mark.system
def test_killed_twice_on_a_snake_scan_resumes_its_whole_frontier(snake, tmp_path):
    rec, full = snake
    out = tmp_path / "scan.h5"
    ats = []
    for extra in ((), ("--resume",)):  # each run gets through about a third of the scan
        kill_after(writer(rec, out, "--delay", "0.02", *extra), 0.4, after_started=True)
        ats.append(read_crashed(out, full))
    assert ats[1] >= ats[0]
    result = finish(writer(rec, out, "--resume"))
    assert result["status"] == "success"
    final = load(out)
    same(final, full)
    assert list(final["events"]["kind"]).count("resume") >= 1


@pytest.mark.system
def test_points_lost_while_down_are_missing_or_filled_in(sweep, tmp_path):
    rec, full = sweep
    out = tmp_path / "scan.h5"
    kill_after(writer(rec, out, "--delay", "0.05"), 0.6, after_started=True)
    at = read_crashed(out, full)
    assert at < SWEEP.npoints - 8, "killed too late for this test"
    lost = list(range(at + 2, at + 6))
    gap = tmp_path / "gap.h5"
    shutil.copy(out, gap)
    # the input after the restart lacks some points: recorded missing at the end
    result = finish(writer(rec, gap, "--resume", "--skip", *map(str, lost)))
    assert result["status"] == "success" and result["resumed_at"] == at
    t = load(gap)
    status = dict(zip(t["points"]["point_id"].tolist(), t["points"]["status"].tolist(),
                      strict=True))
    assert [p for p, s in status.items() if s == 1] == lost
    assert len(status) == SWEEP.npoints
    assert result["counters"]["missing"] == len(lost)
    # the same crashed file with the recording at hand: every point filled in
    result = finish(writer(rec, out, "--resume"))
    assert result["status"] == "success"
    same(load(out), full)


@pytest.mark.system
def test_resume_goes_back_to_the_last_state_and_links_the_rest_again(sweep, tmp_path):
    """With the state written only at the first checkpoint, a kill leaves rows after
    it: the resume cuts the tables back to it and processes those points again."""
    rec, full = sweep
    out = tmp_path / "scan.h5"
    kill_after(writer(rec, out, "--delay", "0.02", "--state-interval", "1e9"), 0.8,
               after_started=True)
    at = read_crashed(out, full)
    assert summary(out)["points"] > at  # rows committed after the last state
    result = finish(writer(rec, out, "--resume"))
    assert result["status"] == "success" and result["resumed_at"] == at
    same(load(out), full)


@pytest.mark.system
def test_resume_refuses_another_config_another_scan_or_an_ended_scan(sweep, tmp_path):
    rec, full = sweep
    out = tmp_path / "scan.h5"
    kill_after(writer(rec, out, "--delay", "0.02"), 0.3, after_started=True)
    start, _ = open_recording([str(rec)])
    other = config(0.0)
    other.override("output", "flush_interval", 0.5)  # another effective config text
    with pytest.raises(ResumeError, match="another config.*sha256"):
        resume(out, other.text(), _start_json(start))
    with pytest.raises(ResumeError, match="another scan.*scan_id"):
        resume(out, config(0.0).text(), _start_json(dataclasses.replace(start,
                                                                        scan_id="another")))
    result = finish(writer(rec, out, "--resume"))  # the refusals changed nothing
    assert result["status"] == "success"
    same(load(out), full)
    assert finish(writer(rec, out, "--resume"))["status"] == "refused"  # it has ended
    with pytest.raises(ResumeError, match="has ended"):
        resume(out, config(0.0).text())


@pytest.mark.system
def test_a_restarted_daemon_finds_the_file_to_resume(sweep, tmp_path):
    rec, full = sweep
    kill_after(writer(rec, tmp_path / "sweep.h5", "--delay", "0.02"), 0.3, after_started=True)
    shutil.copy(rec.parent / "uninterrupted.h5", tmp_path / "sweep-1.h5")  # ended: not it
    (tmp_path / "notes.h5").write_bytes(b"not hdf5")
    text = config(0.0).text()
    assert resumable_file(tmp_path, "sweep", text) == tmp_path / "sweep.h5"
    assert resumable_file(tmp_path, "other", text) is None
    assert resumable_file(tmp_path, "sweep", config(0.5).text()) is None


@pytest.mark.system
def test_counters_after_a_resume_add_up(sweep, tmp_path):
    rec, full = sweep
    out = tmp_path / "scan.h5"
    kill_after(writer(rec, out, "--delay", "0.02"), 0.5, after_started=True)
    at = read_crashed(out, full)
    result = finish(writer(rec, out, "--resume"))
    c = result["counters"]
    assert c["resumed"] == 1 and c["duplicate"] == at  # the stored points came again
    assert c["linked"] == c["written"] == c["processed"] == SWEEP.npoints
    assert c["cliques"] == len(full["cliques"]["clique_id"])
    with h5py.File(out, "r") as f:
        assert f["entry/process/counters"].attrs["linked"] == SWEEP.npoints
        assert f["entry"].attrs["status"] == "success"
