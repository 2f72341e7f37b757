"""Workers: inline, threads and processes give the same file, bit for bit, over a real
socket into `peakstream run`; a worker killed (or hung) mid-scan loses no point."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
from scipy import ndimage

from nodes import Label, Properties
from nodes.kernels.runs import frame_runs
from nodes.link.linker import Linker
from stream.config.schema import Config
from stream.core.item import Item, SparseFrame, empty_peaks
from stream.offline.relink import relink
from stream.run.executors import InlineExecutor, default_count, queue_bound
from stream.run.tasks import decode_result, encode_result, header_of
from stream.sources.simulate import Simulation, send_scan
from stream.wire.codec import encode
from tests.support.flow import (
    SIMCONF,
    assert_same_tables,
    reference_tables,
    run_scan,
    tables,
    workers_config,
)
from tests.support.link import SHAPE, Grid, cat, make_scan, run
from tests.support.paths import CONFIGS, ROOT


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_tables(tmp_path_factory.mktemp("ref"))


def test_result_encoding_round_trips_bit_for_bit():
    rng = np.random.default_rng(0)
    n = 50
    sparse = SparseFrame((64, 80), np.sort(rng.integers(0, 64, n)).astype(np.uint16),
                         rng.integers(0, 80, n).astype(np.uint16),
                         rng.normal(size=n).astype(np.float32),
                         rng.integers(1, 5, n).astype(np.int32), 4)
    peaks = {k: rng.normal(size=4).astype(v.dtype) for k, v in empty_peaks().items()}
    item = Item(7, "eiger", 1.5, {"omega": 0.25, "dty": float("nan")}, {"monitor": 1e4},
                sparse=sparse, peaks=peaks, outputs={"roi": np.arange(6.0).reshape(2, 3)},
                flags=["threshold raised"])
    for packed in (False, True):
        _check_round_trip(item, sparse, peaks, encode_result(3, 1, item, "ok", packed=packed))

    bad = decode_result(encode_result(4, 1, Item(8, "eiger", 2.0), "bad", "node label: boom"))
    assert (bad.status, bad.reason, bad.item.sparse, bad.item.time) == \
        ("bad", "node label: boom", None, 2.0)


def _check_round_trip(item, sparse, peaks, parts):
    res = decode_result([bytes(p) for p in parts])
    assert (res.seq, res.scan, res.point_id, res.status) == (3, 1, 7, "ok")
    got = res.item
    assert (got.time, got.counters, got.flags) == (1.5, {"monitor": 1e4}, ["threshold raised"])
    assert got.motors["omega"] == 0.25 and np.isnan(got.motors["dty"])
    for k in ("row", "col", "intensity", "label"):
        assert getattr(got.sparse, k).dtype == getattr(sparse, k).dtype
        assert np.array_equal(getattr(got.sparse, k), getattr(sparse, k)), k
    assert (got.sparse.shape, got.sparse.npeaks) == ((64, 80), 4)
    for k, v in peaks.items():
        assert got.peaks[k].dtype == v.dtype and np.array_equal(got.peaks[k], v), k
    assert np.array_equal(got.outputs["roi"], item.outputs["roi"])


def test_a_packed_result_is_one_part_with_aligned_arrays_also_from_an_unaligned_buffer():
    rng = np.random.default_rng(1)
    n = 33  # odd: uint16 columns end off the 8-byte grid
    sparse = SparseFrame((64, 80), rng.integers(0, 64, n).astype(np.uint16),
                         rng.integers(0, 80, n).astype(np.uint16),
                         rng.normal(size=n).astype(np.float32),
                         rng.integers(1, 4, n).astype(np.int32), 3)
    peaks = {k: rng.normal(size=3).astype(v.dtype) for k, v in empty_peaks().items()}
    item = Item(7, "eiger", 1.5, {}, {}, sparse=sparse, peaks=peaks)
    parts = encode_result(3, 1, item, "ok", packed=True)
    assert len(parts) == 2 and header_of(parts)["packed"]
    shifted = np.zeros(len(bytes(parts[1])) + 1, np.uint8)  # a receive buffer at an odd
    shifted[1:] = np.frombuffer(bytes(parts[1]), np.uint8)  # address
    for body in (bytes(parts[1]), memoryview(shifted)[1:]):
        got = decode_result([parts[0], body]).item
        arrays = [got.sparse.row, got.sparse.col, got.sparse.intensity, got.sparse.label,
                  *got.peaks.values()]
        assert all(a.flags.aligned and a.ctypes.data % 8 == 0 for a in arrays)
        for k in ("row", "col", "intensity", "label"):
            assert np.array_equal(getattr(got.sparse, k), getattr(sparse, k)), k
        for k, v in peaks.items():
            assert got.peaks[k].dtype == v.dtype and np.array_equal(got.peaks[k], v), k


def _label_runs_items(npoints: int) -> list[Item]:
    """Frames of smoothed noise through label (split none: with its runs) and properties."""
    rng = np.random.default_rng(11)
    noise = ndimage.gaussian_filter(rng.standard_normal((npoints, *SHAPE)), 1.2)
    items = []
    for p in range(npoints):
        row, col = np.nonzero(noise[p] > 0.1)
        px = SparseFrame(SHAPE, row.astype(np.uint16), col.astype(np.uint16),
                         rng.uniform(1, 9, row.size).astype(np.float32))
        items.append(Properties().process(Label(split="none", min_pixels=2).process(
            Item(p, "e", sparse=px))))
    return items


def test_result_encoding_carries_the_label_runs_and_they_link_as_the_pixels():
    items = _label_runs_items(12)
    wire, bare = [], []
    for item in items:
        sp = item.sparse
        assert sp.runs is not None and sp.runs.shape[0] > 0
        for packed in (True, False):  # the last, unpacked, goes on below
            got = decode_result([bytes(p) for p in encode_result(item.point_id, 1, item, "ok",
                                                                 packed=packed)])
            runs = got.item.sparse.runs
            assert runs.dtype == np.int32 and runs.shape == sp.runs.shape
            assert runs.tobytes() == sp.runs.tobytes()
        wire.append((got.item.sparse, got.item.peaks))
        plain = Item(item.point_id, "e", sparse=SparseFrame(
            SHAPE, sp.row, sp.col, sp.intensity, sp.label, sp.npeaks), peaks=item.peaks)
        parts = encode_result(item.point_id, 1, plain, "ok")
        assert "runs" not in header_of(parts)["sparse"]  # no buffer when there are none
        got = decode_result([bytes(p) for p in parts]).item
        assert got.sparse.runs is None
        bare.append((got.sparse, got.peaks))
    empty = Label(split="none").process(Item(0, "e", sparse=SparseFrame.empty(SHAPE)))
    got = decode_result([bytes(p) for p in encode_result(0, 1, empty, "ok")]).item.sparse
    assert got.runs.shape == (0, 5) and got.runs.dtype == np.int32  # a frame without peaks
    for criterion in ("any_pixel", "fraction"):
        a = run(Linker(criterion=criterion), make_scan(Grid(3, 4), 12), wire)
        b = run(Linker(criterion=criterion), make_scan(Grid(3, 4), 12), bare)
        for table in ("overlaps", "cliques", "members"):
            ca, cb = cat(a, table), cat(b, table)
            assert all(ca[k].dtype == cb[k].dtype and ca[k].tobytes() == cb[k].tobytes()
                       for k in ca), table
        assert cat(a, "overlaps")["npixels"].shape[0] > 10
        assert cat(a, "cliques")["clique_id"].shape[0] > 5


def _runs_config(directory, kind: str | None = None):
    """configs/simulated.toml with the label node's split "none" (its runs go over the
    wire), and a [workers] group of `kind`."""
    text = (CONFIGS / "simulated.toml").read_text()
    runs_text = text.replace('kind = "label"\n', 'kind = "label"\nsplit = "none"\n')
    assert runs_text != text
    if kind is not None:
        runs_text += f'\n[workers]\nkind = "{kind}"\ncount = 2\n'
    path = directory / f"runs-{kind or 'inline'}.toml"
    path.write_text(runs_text)
    return path


def test_inline_results_carry_the_label_runs(tmp_path):
    sim = Simulation(SIMCONF)
    executor = InlineExecutor(Config.load(_runs_config(tmp_path)))
    try:
        executor.start_scan(1, encode(sim.start("one")), "eiger", 1 << 26)
        executor.submit(0, 1, 30, encode(sim.point(30, "one")))
        (res,) = [decode_result(r) for r in executor.collect()]
    finally:
        executor.close()
    sp = res.item.sparse
    assert res.status == "ok" and sp.npeaks > 0
    want = frame_runs(sp.row, sp.col, sp.label, sp.intensity[:0], np.array([0, sp.nnz]),
                      np.array([sp.npeaks]), SIMCONF.shape[1])[0]
    assert sp.runs.tobytes() == want.tobytes() and sp.runs.shape == want.shape


@pytest.mark.system
def test_label_runs_over_the_wire_give_the_file_of_inline_and_of_the_pixels(run_process,
                                                                            tmp_path):
    """Split none: inline, threads and processes (the label node's runs carried to the
    linker) write the same tables, and relinking the file from its pixels (the linker
    finds the runs itself) gives its overlaps and cliques again."""
    t = {kind: run_scan(run_process, _runs_config(tmp_path, kind), f"r-{kind}", rate=400)[1]
         for kind in ("inline", "threads", "processes")}
    ref = t["inline"]
    assert ref["cliques"]["clique_id"].shape[0] > 10
    assert ref["counters"]["linked"] == SIMCONF.npoints and ref["counters"]["bad"] == 0
    for kind in ("threads", "processes"):
        assert_same_tables(ref, t[kind])
    relink(tmp_path / "out" / "r-inline.h5", tmp_path / "relinked.h5")
    again = tables(tmp_path / "relinked.h5")
    for name in ("peaks2d", "overlaps", "cliques"):
        assert ref[name].keys() == again[name].keys(), name
        for col in ref[name]:
            x, y = ref[name][col], again[name][col]
            assert x.dtype == y.dtype, (name, col)
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (name, col)


def test_worker_counts_and_queue_bound():
    cores = len(os.sched_getaffinity(0))
    assert default_count("threads") == cores
    assert default_count("processes") == max(1, cores - 1)
    config = Config({"workers": {"kind": "threads", "count": 3}})
    assert queue_bound(config) == 7
    assert queue_bound(Config({"workers": {"kind": "threads", "count": 1}})) == 5
    assert queue_bound(Config({"workers": {"kind": "threads"}})) == max(5, 2 * cores + 1)
    assert queue_bound(Config({"workers": {"kind": "threads", "queue": 2}})) == 2
    assert isinstance(InlineExecutor(Config({})).worker.pipeline.chain, list)


@pytest.mark.system
@pytest.mark.parametrize("kind", ["inline", "threads", "processes"])
def test_inline_threads_processes_write_identical_files(run_process, tmp_path, reference,
                                                        kind):
    err, t = run_scan(run_process, workers_config(tmp_path, kind), f"w-{kind}", rate=400)
    assert len(t["cliques"]["clique_id"]) > 10
    assert_same_tables(reference, t)
    c = t["counters"]
    assert c["received"] == c["accepted"] == c["processed"] == c["linked"] == c["written"] \
        == SIMCONF.npoints
    assert c["missing"] == c["bad"] == c["reassigned"] == 0


def _worker_pids(run, count: int, limit: float = 300.0) -> list[int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pids = [p.pid for p in psutil.Process(run.proc.pid).children()
                if "stream.run.workers" in " ".join(p.cmdline())]
        if len(pids) >= count:
            return pids
        time.sleep(0.1)
    raise AssertionError("the worker processes did not start")


class LiveRun:
    """`peakstream -v run` whose log lines the test can wait for while it runs."""

    def __init__(self, config, output, *args: str):
        cmd = [sys.executable, "-m", "stream.cli", "-v", "run", str(config), "--listen",
               "tcp://127.0.0.1:0", "--output", str(output), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self.endpoint = re.search(r"listening on (tcp://\S+),",
                                      self.wait_for(", writing to")).group(1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (it closes its workers and files), SIGKILL if that does not do."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its workers follow their parent

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, count: int = 1, limit: float = 120.0) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if text in line]
            if len(found) >= count:
                return found[-1]
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {text!r} in:\n{''.join(self.lines)}")

    def wait(self, limit: float = 120.0) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.reader.join(timeout=10)
            self.proc.stdout.close()
        return self.proc.returncode, "".join(self.lines)


@pytest.mark.system
def test_killed_and_hung_workers_lose_no_point(tmp_path, reference):
    config = workers_config(tmp_path, "processes",
                            "heartbeat = 0.1\nheartbeat_timeout = 1.0", name="kill")
    run = LiveRun(config, tmp_path / "out", "--scans", "1")
    killed = hung = None
    try:
        run.wait_for("ready (2 credits)", count=2)  # both workers up
        killed, hung = _worker_pids(run, 2)
        sender = threading.Thread(target=send_scan, args=(Simulation(SIMCONF), run.endpoint,
                                                          "w-kill"), kwargs={"rate": 30})
        sender.start()
        time.sleep(0.5)
        os.kill(killed, signal.SIGKILL)  # its process ends: seen at once
        time.sleep(0.5)
        os.kill(hung, signal.SIGSTOP)  # silent, holding points: seen when heartbeats stop
        sender.join(timeout=120)
        rc, err = run.wait()
    finally:
        if run.proc.poll() is None:
            run.stop()
        for pid in (killed, hung):  # a stopped worker would never see its parent go
            try:
                if pid is not None and "stream.run.workers" in psutil.Process(pid).cmdline():
                    os.kill(pid, signal.SIGKILL)
            except psutil.Error:
                pass  # gone
    assert rc == 0, err
    t = tables(tmp_path / "out" / "w-kill.h5")
    assert_same_tables(reference, t)
    c = t["counters"]
    assert c["linked"] == c["written"] == c["processed"] == SIMCONF.npoints
    assert c["missing"] == c["bad"] == 0
    assert c["restarted"] >= 1, c  # (the hung one is ended, and started again, later)
    assert c["reassigned"] >= 1, c  # the hung worker held points, another did them
    # seen as ended by the process check, or first by a send that cannot reach it
    assert re.search(rf"worker pid {killed} lost \((its process ended|unreachable)", err), err
    assert f"worker pid {hung} lost (no heartbeat" in err


def test_points_are_bad_not_lost_when_no_worker_is_left():
    from stream.run.dispatch import Dispatcher
    from stream.run.tasks import decode_result
    from stream.wire.codec import encode

    sim = Simulation(SIMCONF)
    config = Config({})
    d = Dispatcher(config, "processes", 1, respawn=0, heartbeat=0.1, timeout=1.0)
    try:
        d.children[0].kill()  # before it ever said hello; no restarts allowed
        d.start_scan(1, encode(sim.start("gone")), "eiger", 1 << 26)
        d.submit(0, 1, 0, encode(sim.point(0, "gone")))
        results = []
        deadline = time.monotonic() + 30
        while not results and time.monotonic() < deadline:
            results = d.collect(timeout=0.2)
        (res,) = [decode_result(r) for r in results]
        assert (res.seq, res.point_id, res.status) == (0, 0, "bad")
        assert "no worker is left" in res.reason
        assert d.in_flight == 0 and d.status()["workers"] == 0
    finally:
        d.close()
