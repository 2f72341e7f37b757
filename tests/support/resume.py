"""A scan writer to kill -9 and resume, for the resume and disk-fault tests.

The writer (`python -m tests.support.resume RECORDING OUT.h5 [--resume] [--skip ...]`,
`write()` below) replays a recorded scan point by point as the runner does:
each point through the wire encoding and a `Worker`, the result to a
`Collector` writing a `ScanStore`, a checkpoint at every point (flush
interval 0). With --resume it continues OUT.h5 from its last checkpoint
(`stream.store.resume`): points already stored are skipped, points in --skip are
never delivered.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from stream.config.schema import Config
from stream.core.item import PEAK_COLUMNS, clique_columns
from stream.core.messages import start_to_json as _start_json
from stream.core.scan import Scan
from stream.run.collector import Collector
from stream.run.runner import COUNTERS
from stream.run.tasks import decode_result, encode_scan, encode_task
from stream.run.workers import Worker
from stream.sources.files import open_recording
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.file import write_scan
from stream.store.checkpoint import journal_path, open_h5
from stream.store.reader import load, summary
from stream.store.resume import ResumeError, resume
from stream.store.scanfile import ScanStore
from stream.store.state import read_state
from stream.wire.codec import encode
from tests.support.paths import CONFIGS, ROOT

SWEEP = SimConfig(npoints=48, shape=(96, 128), spots=12, seed=3)
# back-and-forth passes: a point links the previous pass, the frontier is a whole row
SNAKE = SimConfig(npoints=60, spots=10, trajectory="snake", nrows=3, dty_step=0.0,
                  shape=(96, 96), sigma_px=(1.0, 1.5), seed=1, hot_pixels=3, dead_pixels=3)
TABLES = ("cliques", "peaks2d", "overlaps", "sparse")


# ------------------------------------------------------------------ the writer

def config(flush: float = 0.0) -> Config:
    c = Config.load(CONFIGS / "simulated.toml")
    c.override("output", "flush_interval", flush)
    return c


def write(recording: str | Path, out: str | Path, *, resuming: bool = False,
          skip: set[int] = frozenset(), delay: float = 0.0, flush: float = 0.0,
          state_interval: float = 0.0, started=None) -> dict:
    """Replay `recording` into `out` (see the module docstring); a summary."""
    from nodes.link.linker import Linker

    cfg = config(flush)
    start, points = open_recording([str(recording)])
    scan = Scan.from_start(start)
    detector, info = scan.detector(None)
    src = cfg["source"]
    counters: Counter = Counter({k: 0 for k in COUNTERS})
    resumed, at = None, 0
    if resuming:
        try:
            resumed = resume(out, cfg.text(), _start_json(start), flush_interval=flush)
            store, at = resumed.store, resumed.next_point
        except ResumeError as exc:
            if "no such file" not in str(exc):
                return {"status": "refused", "reason": str(exc)}
            resuming = False  # killed before the file was made: start afresh
    if not resuming:
        store = ScanStore(out, scan_id=start.scan_id, detector=detector, motors=start.motors,
                          counters=start.counters, peak_columns=PEAK_COLUMNS,
                          clique_columns=clique_columns(start.motors), config_text=cfg.text(),
                          start_json=_start_json(start), trajectory=scan.trajectory.describe(),
                          flush_interval=flush)
    store.set_shape(info.shape, info.dtype)
    linker = Linker(**cfg["linker"])
    collector = Collector(linker, store, counters, window=src["reorder_window"],
                          timeout=src["point_timeout"], npoints=start.npoints,
                          motors=start.motors, counter_names=start.counters,
                          state_interval=state_interval)
    linker.setup(scan)
    if resumed is not None:
        collector.restore(resumed)
    worker = Worker(cfg)
    worker.handle(encode_scan(1, encode(start), detector, src["max_frame_bytes"]))
    if started is not None:
        started()
    for seq, point in enumerate(points):
        pid = point.point_id
        if pid in skip:
            continue
        if collector.seen(pid):  # stored before the crash: kept as it is
            counters["duplicate"] += 1
            continue
        collector.expect(pid)
        res = decode_result(worker.handle(encode_task(seq, 1, pid, encode(point))))
        if res.status == "ok":
            collector.add(res.item)
        else:
            collector.add_bad(pid, res.reason, res.item)
        if delay:
            time.sleep(delay)
    collector.finish("success")
    return {"status": "fail" if collector.failed else "success", "failed": collector.failed,
            "resumed_at": at, "counters": dict(counters)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("recording")
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--skip", type=int, nargs="*", default=[])
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--flush", type=float, default=0.0)
    p.add_argument("--state-interval", type=float, default=0.0)
    a = p.parse_args(argv)
    result = write(a.recording, a.out, resuming=a.resume, skip=set(a.skip), delay=a.delay,
                   flush=a.flush, state_interval=a.state_interval,
                   started=lambda: print("started", flush=True))
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["status"] in ("success", "refused") else 1)


# ------------------------------------------------------------------ helpers

def writer(recording: Path, out: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.support.resume", str(recording),
                             str(out), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Wait for a writer; its JSON summary."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.strip().splitlines()
    assert lines and lines[-1].startswith("{"), f"writer died (rc {proc.returncode}):\n{err}"
    return {**json.loads(lines[-1]), "stderr": err}


def kill_after(proc: subprocess.Popen, seconds: float, after_started: bool) -> None:
    """SIGKILL the writer `seconds` after it started its points (or after its launch)."""
    try:
        if after_started:
            assert proc.stdout.readline().strip() == "started", proc.stderr.read()
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def recording(tmp_path_factory, sim: SimConfig, name: str) -> tuple[Path, dict]:
    """A recorded scan and the uninterrupted writer's tables for it."""
    d = tmp_path_factory.mktemp(name)
    rec = d / "recording.h5"
    write_scan(Simulation(sim), rec, name)
    result = write(rec, d / "uninterrupted.h5")
    assert result["status"] == "success"
    tables = load(d / "uninterrupted.h5")
    assert len(tables["cliques"]["clique_id"]) >= 5
    return rec, tables


def same(a: dict, b: dict, tables=TABLES) -> None:
    """Identical tables, every column, bit for bit."""
    for t in tables:
        assert a[t].keys() == b[t].keys(), t
        for k in a[t]:
            assert a[t][k].dtype == b[t][k].dtype, (t, k)
            assert np.array_equal(a[t][k], b[t][k], equal_nan=a[t][k].dtype.kind == "f"), (t, k)


def prefix_intact(crashed: dict, full: dict) -> None:
    """Every row the crashed file holds is the uninterrupted run's row (a 2D peak's
    clique_id is -1 while its clique is open)."""
    for t in ("points", "sparse", "peaks2d", "overlaps", "cliques"):
        for k, col in crashed[t].items():
            ref = full[t][k][:col.shape[0]]
            if t == "peaks2d" and k == "clique_id":
                assert np.all((col == -1) | (col == ref)), t
            else:
                assert np.array_equal(col, ref, equal_nan=col.dtype.kind == "f"), (t, k)


def read_crashed(out: Path, full: dict) -> int:
    """The file a kill left: opens and reads (plain h5py too unless a commit was cut
    short), its rows are the uninterrupted run's; the next point a resume links."""
    if not out.exists():
        return 0
    if not journal_path(out).exists():
        with h5py.File(out, "r") as f:  # plain h5py, no help
            assert f["entry/points/point_id"].shape[0] <= len(full["points"]["point_id"])
    s = summary(out)
    assert s["status"] == "running" and s["checkpoint"]["resumable"]
    crashed = load(out)
    prefix_intact(crashed, full)
    with open_h5(out) as f:
        ck = f["entry/process/checkpoint"]
        at = int(read_state(ck)["collector"]["next_point"]) if "state" in ck else 0
    assert at == s["checkpoint"]["resume_at"] <= s["points"]
    return at


if __name__ == "__main__":
    main()
