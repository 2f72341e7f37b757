"""Shared by the DECTRIS source tests: a hand CBOR writer for captured-bytes vectors,
an emulator + source pair on real sockets, and the replay / live comparison runs."""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from nodes.decode import dense
from stream.config.schema import Config
from stream.core.encoded import EncodedFrame
from stream.core.messages import End, Start
from stream.run.runner import ScanRunner
from stream.sources.dectris import DectrisSource
from stream.sources.dectris.emulator import DetectorEmulator
from stream.sources.files import open_recording
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import decode, encode
from tests.support.flow import tables
from tests.support.paths import CONFIGS

# ------------------------------------------------------------------ a CBOR writer by hand
# (RFC 8949 heads, written here so the vectors do not come from the code under test)


def head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError(n)


def uint(n: int) -> bytes:
    return head(0, n)


def bstr(b: bytes) -> bytes:
    return head(2, len(b)) + b


def text(s: str) -> bytes:
    b = s.encode()
    return head(3, len(b)) + b


def array(*items: bytes) -> bytes:
    return head(4, len(items)) + b"".join(items)


def cmap(**items: bytes) -> bytes:
    return head(5, len(items)) + b"".join(text(k) + v for k, v in items.items())


def cmap_items(items: dict[str, bytes]) -> bytes:
    return head(5, len(items)) + b"".join(text(k) + v for k, v in items.items())


def tag(n: int, content: bytes) -> bytes:
    return head(6, n) + content


def f64(x: float) -> bytes:
    return b"\xfb" + struct.pack(">d", x)


TRUE, FALSE = b"\xf5", b"\xf4"


def self_described(content: bytes) -> bytes:
    return tag(55799, content)


def typed(tag_number: int, arr: np.ndarray, dtype: str) -> bytes:
    """Tag 40 [[rows, cols], tag(typed) bytes] of an array in `dtype`'s byte order."""
    rows, cols = arr.shape
    return tag(40, array(array(uint(rows), uint(cols)),
                         tag(tag_number, bstr(np.ascontiguousarray(arr, dtype).tobytes()))))


def compressed(tag_number: int, shape: tuple[int, int], algorithm: str, elem: int,
               data: bytes) -> bytes:
    rows, cols = shape
    inner = tag(56500, array(text(algorithm), uint(elem), bstr(data)))
    return tag(40, array(array(uint(rows), uint(cols)), tag(tag_number, inner)))


# ------------------------------------------------------------------ sockets


def as_dense(frame) -> np.ndarray:
    return dense(frame) if isinstance(frame, EncodedFrame) else np.asarray(frame)


@contextlib.contextmanager
def emulator_and_source(version: int = 2, encoding: str = "raw", header_detail: str = "basic",
                        motors_lane: bool = True, **kw):
    """A DetectorEmulator (bound) and a DectrisSource connected to it, with the motor lane."""
    emu = DetectorEmulator(version=version, encoding=encoding, header_detail=header_detail)
    src = None
    try:
        src = DectrisSource(endpoint=emu.endpoint, version=version,
                            listen="tcp://127.0.0.1:0" if motors_lane else "", **kw)
        if motors_lane:
            emu.connect_motors(src.endpoint_bound)
        yield emu, src
    finally:
        if src is not None:
            src.close()
        emu.close(linger=0)


def collect(src: DectrisSource, ends: int = 1, limit: float = 120.0) -> list[list]:
    """Our messages until `ends` End messages came (`limit` s only ends a wait for ends
    that never come)."""
    out: list[list] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = src.receive(0.05)
        out += got
        if sum(isinstance(decode(p), End) for p in got) and \
                sum(isinstance(decode(p), End) for p in out) >= ends:
            break
    return out


def collect_until(src: DectrisSource, done: Callable[[dict], bool],
                  limit: float = 120.0) -> list[list]:
    """Our messages until the source's status satisfies `done` (e.g. it has read every
    message sent): waits for that event, not for a quiet time; fails only if it never
    happens within `limit` s."""
    out: list[list] = []
    deadline = time.monotonic() + limit
    while not done(status := src.status()):
        assert time.monotonic() < deadline, f"the source never got there: {status}"
        out += src.receive(0.05)
    return out


def read(messages: int = 0, motor_messages: int = 0) -> Callable[[dict], bool]:
    """`done` for collect_until: the source has read this many detector / motor messages."""
    return lambda st: st["messages"] >= messages and st["motor_messages"] >= motor_messages


def send_in_thread(emu: DetectorEmulator, *args, **kwargs) -> threading.Thread:
    t = threading.Thread(target=emu.send_series, args=args, kwargs=kwargs, daemon=True)
    t.start()
    return t


def decoded(parts_list: list[list]) -> list:
    return [decode(p) for p in parts_list]


def kinds(msgs: list) -> list[str]:
    return [type(m).__name__ for m in msgs]


# ------------------------------------------------------------------ live vs replay

SIM = SimConfig(npoints=32, shape=(128, 160), spots=8, seed=3)
TRAJECTORY = {"kind": "sweep", "fast": "omega"}


def sim_scan(dtype: str = "uint16"):
    """Frames, motors and counters of a small simulated sweep."""
    sim = Simulation(SimConfig(**{**SIM.as_dict(), "dtype": dtype}))
    n = sim.config.npoints
    return ([sim.frame(i) for i in range(n)], [sim.motors(i) for i in range(n)],
            [{"monitor": sim.monitor_value(i)} for i in range(n)])


def replay_tables(tmp: Path, frames, motors, counters) -> dict:
    """The frames as an HDF5 stack replayed through an in-process runner."""
    h5 = tmp / "stack.h5"
    with h5py.File(h5, "w") as f:
        f["/1.1/measurement/eiger"] = np.stack(frames)
        f["/1.1/measurement/omega"] = np.array([m["omega"] for m in motors])
        f["/1.1/measurement/monitor"] = np.array([c["monitor"] for c in counters])
    start, points = open_recording(
        [], images=[f"{h5}::/1.1/measurement/eiger"],
        motors={"omega": f"{h5}::/1.1/measurement/omega"},
        counters={"monitor": f"{h5}::/1.1/measurement/monitor"},
        trajectory=TRAJECTORY, scan_id="replay")
    out = tmp / "replay.h5"
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=out)
    runner.handle(encode(start))
    for p in points:
        runner.handle(encode(p))
    runner.handle(encode(End("replay", "success", len(frames))))
    runner.close()
    assert runner.results[0]["status"] == "success", runner.results
    return tables(out)


def live_tables(tmp: Path, messages: list[list]) -> tuple[dict, dict]:
    """Our messages from a DectrisSource through an in-process runner."""
    out = tmp / "live.h5"
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=out)
    for parts in messages:
        runner.handle(parts)
    runner.close()
    return tables(out), runner.results[0]


def assert_same_cliques(a: dict, b: dict) -> None:
    """Everything the linker decided is the same (point times differ: not compared)."""
    for name in ("sparse", "peaks2d", "overlaps", "cliques", "links"):
        assert a[name].keys() == b[name].keys(), name
        for col in a[name]:
            x, y = a[name][col], b[name][col]
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (name, col)
    assert len(a["cliques"]["clique_id"]) > 0


def first_start(msgs: list) -> Start:
    return next(m for m in msgs if isinstance(m, Start))


def run_emulator_cli(args: list[str], receive: Callable[[str], list]) -> tuple:
    """`tools/detector_emulator.py ARGS` in a subprocess; `receive(first_line)` reads
    what it sends (its first line says where it listens). (messages, first line, stdout,
    stderr, exit code) once it has exited; killed if the test fails first."""
    import subprocess
    import sys

    from tests.support.paths import ROOT

    proc = subprocess.Popen([sys.executable, "tools/detector_emulator.py", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        msgs = receive(first)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return msgs, first, out, err, proc.returncode
