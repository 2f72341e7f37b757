"""The thread pool: the same results as inline, every point answered (a corrupt one as
bad), setup per scan, and threads the operating system knows by name."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from nodes.link.warmup import readonly_frame, readonly_peaks
from stream.config.schema import Config
from stream.core.messages import Point
from stream.core.threads import named_thread
from stream.run.dispatch import Dispatcher
from stream.run.executors import InlineExecutor, make_executor
from stream.run.pipeline import Pipeline
from stream.run.tasks import as_result, encode_scan
from stream.run.threadpool import ThreadPool
from stream.run.workers import Worker
from stream.sources.simulate import Simulation
from stream.wire.codec import decode, encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS

POINTS = range(24, 40)  # the middle of the simulated scan: spots on every frame


def _results(executor, sim: Simulation, scan: int, scan_id: str, corrupt=(),
             decoded: bool = False) -> dict:
    """`decoded`: each task goes with the point decoded, as the runner hands it over."""
    executor.start_scan(scan, encode(sim.start(scan_id)), "eiger", 1 << 26)
    for seq, pid in enumerate(POINTS):
        parts = encode(sim.point(pid, scan_id))
        if pid in corrupt:
            p = sim.point(pid, scan_id)
            frame = p.frames["eiger"]
            parts = encode(Point(p.scan_id, pid, p.time, p.motors, p.counters,
                                 {"eiger": frame[:-1]}))  # the wrong shape
        executor.submit(seq, scan, pid, parts, point=decode(parts) if decoded else None)
    got = {}
    while len(got) < len(POINTS):
        for out in executor.collect(timeout=1.0):
            res = as_result(out)
            got[res.point_id] = res
    assert executor.in_flight == 0 and executor.collect() == []
    return got


def test_threads_give_what_inline_gives_and_a_bad_point_costs_only_itself():
    config = Config.load(CONFIGS / "simulated.toml")
    sim = Simulation(SIMCONF)
    inline = InlineExecutor(config)
    pool = ThreadPool(config, 2)
    try:
        want = _results(inline, sim, 1, "a")
        # set up again for the second scan; the point as a message, then decoded
        for scan, scan_id, decoded in ((1, "a", False), (2, "b", True)):
            got = _results(pool, sim, scan, scan_id, corrupt={30}, decoded=decoded)
            assert got[30].status == "bad" and "start announced" in got[30].reason
            for pid in POINTS:
                if pid == 30:
                    continue
                a, b = want[pid].item, got[pid].item
                assert got[pid].status == "ok" and b.sparse.npeaks > 0
                for k in ("row", "col", "intensity", "label"):
                    assert getattr(a.sparse, k).tobytes() == getattr(b.sparse, k).tobytes()
                for k in a.peaks:
                    assert a.peaks[k].tobytes() == b.peaks[k].tobytes(), k
        status = pool.status()
        assert status["kind"] == "threads" and status["workers"] == 2
        assert status["queued"] == 0 and status["at_workers"] == 0
    finally:
        inline.close()
        pool.close()
    assert not any(t.is_alive() for t in pool.threads)


def test_a_threads_result_is_read_only_so_the_linker_takes_it_as_it_is():
    """The linker hands its kernels read-only arrays: a worker thread's result comes so,
    and the collector's thread (serial) makes no views of its ~20 arrays a point."""
    config = Config.load(CONFIGS / "simulated.toml")
    pool = ThreadPool(config, 1)
    try:
        res = _results(pool, Simulation(SIMCONF), 1, "a")[POINTS[0]]
    finally:
        pool.close()
    sp, peaks = res.item.sparse, res.item.peaks
    arrays = [sp.row, sp.col, sp.intensity, sp.label, *peaks.values()]
    assert len(arrays) > 10 and not any(a.flags.writeable for a in arrays)
    assert readonly_frame(sp) is sp and readonly_peaks(peaks) is peaks
    writeable = {k: v.copy() for k, v in peaks.items()}  # (what another caller may give)
    views = readonly_peaks(writeable)
    assert views is not writeable and not any(v.flags.writeable for v in views.values())


class ReusedBuffer:
    """A node that writes each point's output into the one array it keeps."""

    kind = "reused"

    def __init__(self) -> None:
        self.buffer = np.zeros(3, np.float32)

    def setup(self, scan) -> None:
        pass

    def process(self, item):
        self.buffer[:] = item.point_id
        item.outputs["reused"] = self.buffer
        return item


def test_a_node_may_reuse_an_output_buffer():
    """A result keeps read-only views, never the node's arrays made read-only: a node
    that puts the same array into its outputs at every point can write it at the next
    point, and what it wrote does not change the earlier points' results (which the
    collector or the linker may still hold)."""
    worker = Worker(Config.load(CONFIGS / "simulated.toml"))
    node = ReusedBuffer()
    worker.pipeline = Pipeline([*worker.pipeline.nodes, node])
    sim = Simulation(SIMCONF)
    worker.handle(encode_scan(1, encode(sim.start("reuse")), "eiger", 1 << 26))
    results = [worker.run(seq, 1, pid, encode(sim.point(pid, "reuse")))
               for seq, pid in enumerate(POINTS[:3])]
    assert [r.status for r in results] == ["ok"] * 3, [r.reason for r in results]
    for r, pid in zip(results, POINTS[:3], strict=True):
        assert r.item.outputs["reused"].tolist() == [pid] * 3
        assert not r.item.outputs["reused"].flags.writeable
    assert node.buffer.flags.writeable


def test_a_point_of_a_scan_the_threads_were_not_set_up_for_is_bad():
    config = Config.load(CONFIGS / "simulated.toml")
    sim = Simulation(SIMCONF)
    pool = ThreadPool(config, 1)
    try:
        pool.submit(0, 7, 25, encode(sim.point(25, "x")))  # no start_scan for scan 7
        (res,) = [as_result(p) for p in pool.collect(timeout=60.0)]
        assert res.status == "bad" and "not set up" in res.reason
    finally:
        pool.close()


@pytest.mark.parametrize("endpoint, kind", [("", ThreadPool), ("tcp://127.0.0.1:0", Dispatcher)])
def test_threads_join_a_dispatcher_only_with_an_endpoint(tmp_path: Path, endpoint, kind):
    config = Config({"workers": {"kind": "threads", "count": 1, "endpoint": endpoint}})
    executor = make_executor(config)
    try:
        assert isinstance(executor, kind) and executor.kind == "threads"
    finally:
        executor.close()


def test_named_threads_carry_their_name_to_the_kernel():
    seen: list[str] = []

    def look() -> None:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as fh:
            seen.append(fh.read().strip())

    t = named_thread(look, "worker-7-and-a-long-tail")
    t.start()
    t.join()
    assert t.name == "worker-7-and-a-long-tail" and seen == ["worker-7-and-a-"]
