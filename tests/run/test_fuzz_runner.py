"""Property-based fuzz of the runner's message handling (issue #13): any sequence of
starts, points and ends (valid or not, for any scan, of any size) never raises out of
`handle`, never grows memory without bound, and the next clean scan is right."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config.schema import Config
from stream.core.item import SparseFrame
from stream.core.messages import DetectorInfo, End, FrameRef, Point, Start
from stream.run.runner import ScanRunner
from stream.store.reader import load
from stream.wire.codec import encode

SHAPE = (16, 20)
IDS = ["a", "b", "../x", "c" * 150]
NPOINTS = [None, 0, 1, 6, 10**6, 2**40, 2**63 - 1]
POINT_IDS = [0, 1, 2, 3, 5, 9, 200, 10**6, 2**62, 2**63 - 1]
MOTORS = [0.0, 1.5, math.nan, math.inf, -math.inf, -1e308, 1e12]
KINDS = ["ok", "uint32", "shape", "nan", "ref", "none", "error"]
EXTRA = """
[source]
max_points = 1000
max_gap = 100
point_timeout = 0.5
end_timeout = 5.0
[live]
max_map_cells = 10000
"""


def config() -> Config:
    import tomllib

    data = tomllib.loads(EXTRA)
    data["node"] = [{"kind": "threshold", "cut": 50.0}, {"kind": "label", "min_pixels": 1},
                    {"kind": "properties"}]
    return Config(data)


def start(scan_id: str, npoints, traj: int) -> list:
    trajectory = [{"kind": "sweep", "fast": "omega"},
                  {"kind": "grid", "fast": "omega", "slow": "dty", "nfast": 3},
                  {"kind": "grid", "fast": "omega", "slow": "dty", "nfast": 30_000_000}][traj]
    return encode(Start(scan_id, {"det": DetectorInfo(SHAPE, "uint16")}, ["omega", "dty"],
                        [], npoints, trajectory))


def frame(pid: int) -> np.ndarray:
    f = np.zeros(SHAPE, np.uint16)
    f[4:7, 5 + pid % 3:8 + pid % 3] = 200  # one 3 x 3 spot, moving a little
    return f


def point(scan_id: str, pid: int, kind: str, motor: float) -> list:
    frames: dict = {"det": frame(pid)}
    extra = {}
    if kind == "uint32":
        frames = {"det": frame(pid).astype(np.uint32)}
    elif kind == "shape":
        frames = {"det": np.zeros((4, 4), np.uint16)}
    elif kind == "nan":
        frames = {"det": SparseFrame(SHAPE, np.array([1], np.uint16), np.array([1], np.uint16),
                                     np.array([np.nan], np.float32))}
    elif kind == "ref":
        frames = {"det": FrameRef("/etc/passwd", "/x", 0)}
    elif kind == "none":
        frames = {}
    elif kind == "error":
        extra = {"error": "the detector lost it"}
    return encode(Point(scan_id, pid, 1.0, {"omega": motor, "dty": 0.0}, {}, frames, extra))


MESSAGES = st.one_of(
    st.builds(start, st.sampled_from(IDS), st.sampled_from(NPOINTS), st.integers(0, 2)),
    st.builds(point, st.sampled_from(IDS), st.sampled_from(POINT_IDS), st.sampled_from(KINDS),
              st.sampled_from(MOTORS)),
    st.builds(lambda sid, n: encode(End(sid, "success", n)), st.sampled_from(IDS),
              st.sampled_from(NPOINTS)),
    st.builds(lambda b: [b], st.binary(max_size=16)),
    st.builds(lambda n: [msgpack.packb({"type": "point", "scan_id": "a", "point_id": n})],
              st.integers(-(2**63), 2**64 - 1)),
)


def test_fuzz_runner_messages(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz")
    runner = ScanRunner(config(), output_dir=out)
    rss0 = psutil.Process().memory_info().rss

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(MESSAGES, max_size=12))
    def run(messages):
        for parts in messages:
            runner.handle(parts)  # never raises
            runner.poll()
            status = runner.status()
            assert status["rss"] < rss0 + (500 << 20)
        runner.abort("end of the example")
        assert runner.current is None

    try:
        run()
        # the next clean scan: every point ok, every spot pixel in a clique
        runner.handle(start("clean", 6, 0))
        for pid in range(6):
            runner.handle(point("clean", pid, "ok", float(pid)))
        runner.handle(encode(End("clean", "success", 6)))
        assert runner.results[-1]["status"] == "success"
        t = load(runner.results[-1]["file"])
        assert t["points"]["status"].tolist() == [0] * 6
        assert t["cliques"]["npx"].sum() == 6 * 9 and t["cliques"]["n2d"].sum() == 6
    finally:
        runner.close()
