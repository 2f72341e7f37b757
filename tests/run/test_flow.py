"""Flow control: back-pressure never loses a point, the overrun policy aborts when
asked, the counters add up at every step, and `peakstream run` prints its progress."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import zmq

from stream.config.base import ConfigError
from stream.config.schema import Config
from stream.run.collector import ReorderBuffer, Slot
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation, send_scan
from stream.sources.simulate.config import SimConfig
from stream.store.reader import summary
from stream.wire.codec import encode
from tests.support.flow import SIMCONF, assert_same_tables, reference_tables, tables, wait_for_file
from tests.support.paths import CONFIGS


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_tables(tmp_path_factory.mktemp("ref"))


def config_with(tmp_path, name: str, source: str = "", workers: str = ""):
    """configs/simulated.toml with extra [source] lines and a [workers] group."""
    text = (CONFIGS / "simulated.toml").read_text()
    for line in source.splitlines():  # a key given replaces the file's own
        key = line.split("=")[0].strip()
        text = re.sub(rf"^{key} = .*$", "", text, flags=re.M)
    text = text.replace("[source]\n", f"[source]\n{source}\n")
    path = tmp_path / f"{name}.toml"
    path.write_text(f"{text}\n[workers]\n{workers}\n")
    return path


def blast(endpoint: str, messages: list[list]) -> None:
    """Send everything as fast as the receiver lets us (SNDHWM 1: we feel its pace)."""
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 1)
    sock.setsockopt(zmq.LINGER, 10_000)
    sock.connect(endpoint)
    for parts in messages:
        sock.send_multipart(parts)
    sock.close()


def scan_messages(sim: Simulation, scan_id: str) -> list[list]:
    n = sim.config.npoints
    return [encode(sim.start(scan_id)), *(encode(sim.point(i, scan_id)) for i in range(n)),
            encode(sim.end(scan_id, n))]


# ------------------------------------------------------------------ reorder buffer


def test_a_point_being_processed_holds_its_place():
    buf = ReorderBuffer(window=2, timeout=1.0)
    buf.push(Slot(0, None, "pending", arrived=0.0))
    for pid in (1, 2, 3, 4):
        buf.push(Slot(pid, None, arrived=0.0))
    assert buf.pop(now=100.0) == []  # neither the window nor the timeout: it is coming
    assert buf.seen(0) and buf.pending == 1
    buf.push(Slot(0, None, "ok", arrived=50.0))  # its result takes the place
    assert [s.point_id for s in buf.pop(now=100.0)] == [0, 1, 2, 3, 4]
    buf.push(Slot(5, None, "pending"))
    out = buf.pop(now=None, final=True)
    assert [(s.point_id, s.status) for s in out] == [(5, "lost")]
    with pytest.raises(ValueError, match="already received"):
        buf.push(Slot(4, None))


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("group, text, words", [
    ("workers", 'kind = "dask"', "[workers] kind must be one of inline, threads, processes"),
    ("workers", "count = -1", "[workers] count must be >= 0"),
    ("workers", "threads = 2", "[workers] unknown key 'threads'"),
    ("workers", 'endpoint = "localhost:5000"', "[workers] endpoint must be ipc://"),
    ("workers", "heartbeat = 1.0\nheartbeat_timeout = 1.5", "at least twice the heartbeat"),
    ("source", 'overrun = "drop"', "[source] overrun must be one of block, abort"),
    ("source", "max_lag = 64", "max_lag (64) must be more than reorder_window (64)"),
    ("source", 'max_lag = "10"', "[source] max_lag must be int"),
])
def test_flow_keys_are_checked(tmp_path, group, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(f"[{group}]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        Config.load(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_flow_keys_round_trip_through_the_effective_config():
    config = Config({"source": {"overrun": "abort", "max_lag": 100},
                     "workers": {"kind": "processes", "count": 3, "endpoint": "tcp://127.0.0.1:0"}})
    again = Config.from_text(config.text())
    assert again["workers"] == config["workers"] and again["source"] == config["source"]


# ------------------------------------------------------------------ counters


def check_invariants(status: dict) -> None:
    s = status["scan"]
    assert s["accepted"] == s["processed"] + s["bad"] + status["in_flight"], s
    assert s["processed"] + s["bad"] + s["missing"] == s["linked"] + s["waiting"], s
    assert s["written"] <= s["linked"]
    assert s["lag"] == max(s["newest"] - s["last_linked"], 0) <= s["max_lag"] or \
        s["lag"] == s["newest"] - s["last_linked"]
    assert status["in_flight"] <= status["queue"]
    assert status["rss"] > 10 * 2**20


@pytest.mark.parametrize("kind", ["inline", "threads"])
def test_counters_add_up_at_every_step(tmp_path, kind):
    sim = Simulation(SimConfig(npoints=40, shape=(96, 128), spots=10, seed=4))
    config = Config.load(config_with(tmp_path, kind, workers=f'kind = "{kind}"\ncount = 2'))
    path = tmp_path / f"{kind}.h5"
    runner = ScanRunner(config, output_file=path)
    try:
        runner.handle(encode(sim.start("c")))
        for i in range(40):
            if i == 7:
                continue  # never sent: missing
            point = sim.point(i, "c")
            if i == 11:
                point.extra["error"] = "detector readout failed"  # bad
            runner.handle(encode(point))
            if i == 20:
                runner.handle(encode(sim.point(3, "c")))  # duplicate
                beyond = sim.point(39, "c")
                beyond.point_id = 45
                runner.handle(encode(beyond))  # beyond npoints: rejected
            check_invariants(runner.status())
        status = runner.status()["scan"]
        runner.handle(encode(sim.end("c", 40)))
    finally:
        runner.close()
    assert status["received"] == status["accepted"] + status["duplicate"] + 1
    r = runner.results[0]
    assert r["status"] == "incomplete"  # one point missing: never a silent success
    assert (r["received"], r["accepted"], r["processed"], r["bad"], r["missing"],
            r["duplicate"]) == (41, 39, 38, 1, 1, 1)
    assert r["linked"] == r["written"] == 40 == r["processed"] + r["bad"] + r["missing"]
    file_counters = summary(path)["counters"]
    for key in ("received", "accepted", "processed", "bad", "missing", "linked", "written",
                "duplicate", "cliques"):
        assert file_counters[key] == r[key], key
    assert file_counters["rss"] > 0 and file_counters["lag"] == 0
    assert "max_lag" in file_counters and "overruns" in file_counters
    session = runner.status()
    assert session["scans"] == 1 and session["linked"] == 40 and "scan" not in session


# ------------------------------------------------------------------ back-pressure


def blasted_tables(run_process, tmp_path, reference, name: str, **config) -> dict:
    """The tables of the simulated scan sent at full speed to `run` with this config
    (checked equal to the reference run's)."""
    run = run_process(config_with(tmp_path, name, **config), "--scans", "1")
    blast(run.endpoint, scan_messages(Simulation(SIMCONF), name))
    rc, out, err = run.wait()
    assert rc == 0, err
    t = tables(tmp_path / "out" / f"{name}.h5")
    assert_same_tables(reference, t)
    return t


@pytest.mark.system
def test_back_pressure_with_a_tiny_queue_loses_no_point(run_process, tmp_path, reference):
    t = blasted_tables(run_process, tmp_path, reference, "tiny", source="rcvhwm = 1",
                       workers='kind = "threads"\ncount = 1\nqueue = 2')
    c = t["counters"]
    assert c["linked"] == c["processed"] == SIMCONF.npoints and c["missing"] == 0
    assert c["overruns"] >= 1  # the receiver was held back at least once ...
    assert c["max_lag"] <= 2  # ... so the lag stayed within the queue


@pytest.mark.system
def test_two_workers_keep_the_lag_within_the_queue(run_process, tmp_path, reference):
    """Results back from one worker but held behind a point still at the other count
    against the queue, so the lag never passes it whatever order the workers finish in."""
    t = blasted_tables(run_process, tmp_path, reference, "two",
                       workers='kind = "threads"\ncount = 2\nqueue = 3')
    assert t["counters"]["overruns"] >= 1 and 1 <= t["counters"]["max_lag"] <= 3


def test_reorder_buffer_holds_only_behind_a_pending_point():
    buf = ReorderBuffer(window=8)
    for pid in range(3):
        buf.push(Slot(pid, None, "pending"))
    buf.push(Slot(1, None, "ok"))
    buf.push(Slot(2, None, "ok"))
    assert buf.held == 2  # both wait for point 0, which a worker still has
    buf.push(Slot(0, None, "ok"))
    assert [s.point_id for s in buf.pop(None)] == [0, 1, 2] and buf.held == 0
    buf.push(Slot(5, None, "ok"))  # a gap at 3, 4: waits for the window, not a worker
    assert buf.held == 0


@pytest.mark.system
def test_overrun_abort_ends_the_scan_with_the_reason(run_process, tmp_path):
    config = config_with(tmp_path, "abort",
                         source='overrun = "abort"\nmax_lag = 2\nreorder_window = 1',
                         workers='kind = "threads"\ncount = 1\nqueue = 64')
    run = run_process(config, "--scans", "1")
    sim = Simulation(SimConfig(npoints=60, shape=(512, 512), spots=24, seed=3))
    blast(run.endpoint, scan_messages(sim, "fast"))
    rc, out, err = run.wait()
    assert rc == 1, err
    s = summary(tmp_path / "out" / "fast.h5")
    assert s["status"] == "abort"
    assert "overrun: lag" in s["reason"] and "exceeds max_lag 2" in s["reason"]
    c = s["counters"]
    # every point accepted before the abort was processed and written, none lost
    assert c["accepted"] == c["processed"] + c["bad"] and c["bad"] == 0
    assert c["linked"] == c["written"] == s["points"]


# ------------------------------------------------------------------ progress


@pytest.mark.system
def test_run_prints_one_progress_line_per_interval(run_process, tmp_path):
    config = config_with(tmp_path, "progress", workers='kind = "threads"\ncount = 1')
    run = run_process(config, "--scans", "2", "--progress-interval", "0.2")
    sim = Simulation(SimConfig(npoints=60, shape=(96, 128), spots=10, seed=2))
    send_scan(sim, run.endpoint, "warm-up")  # compiled and set up before the timed scan
    wait_for_file(tmp_path / "out" / "warm-up.h5")  # (two senders' points would mix)
    sender = threading.Thread(target=send_scan, args=(sim, run.endpoint, "p"),
                              kwargs={"rate": 40})
    sender.start()
    sender.join(timeout=120)
    rc, out, err = run.wait()
    assert rc == 0, err
    line = re.compile(r"^run: scan p: (\d+)/60 linked, \d+/s in, \d+/s linked; lag \d+ "
                      r"\(max \d+\); queues: \d+/\d+ out \(\d+ waiting for \d+ threads "
                      r"worker\(s\)\), \d+ to reorder(, receiver held back)?; \d+ missing, "
                      r"\d+ bad, \d+ cliques; RSS \d+ MiB$", re.M)
    linked = [int(m.group(1)) for m in line.finditer(err)]
    assert len(linked) >= 3, err
    assert linked == sorted(linked) and np.all(np.array(linked) <= 60)
