"""Load (or compile) every numba kernel a config will use before any data arrives.

The kernels are `cache=True`: after an install or upgrade the first process
compiles them (minutes on 2 cores), later ones load them from the cache
(about 2 s in all). Either way it used to happen at the first point of the
first scan, while a sender's messages piled up. `warmup(config)` runs a tiny
synthetic scan of each detector dtype and encoding in `[source] warmup`
through a `ScanRunner` of that config (wire encoding, workers, chain, linker,
store into a temporary directory), so every path the real scans take is
loaded before `run`, `daemon` or `demo` binds the data socket. As pyFAI's
`worker.warmup()` does, with a count of the kernels as they compile.

Each compile is timed (numba's "numba:compile" event) for
`peakstream warmup --verbose`; the kernel count and the cold time of the
last warm-up are kept beside numba's cache so the progress line can say
`12/40` and about how long a cold start takes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream import __version__
from stream.config.schema import Config
from stream.core.messages import DetectorInfo, End, Point, Start

log = logging.getLogger(__name__)

COLD_GUESS = 60.0  # s, a cold warm-up of the default chain on 2 cores (no record yet)
NPOINTS = 6
SHAPE = (64, 64)


@dataclass
class Compiled:
    """One numba compile: the kernel, its argument types, seconds (nested ones included)."""
    name: str
    signature: str
    seconds: float
    depth: int


@dataclass
class WarmupReport:
    """What a warm-up did: kernels in memory afterwards, those compiled, time, problems."""
    kernels: int = 0
    compiled: list[Compiled] = field(default_factory=list)
    seconds: float = 0.0
    frames: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def frame_kinds(config: Config) -> list[tuple[str, str]]:
    """(dtype, encoding) pairs of `[source] warmup` ("uint16/bslz4", "float32/raw"). A
    chain with no threshold before its label takes frames already sparse (an ImageD11
    sparse file's): it warms with sparse frames of those dtypes."""
    out = []
    for spec in config["source"]["warmup"]:
        dtype, _, encoding = spec.partition("/")
        out.append((dtype, encoding or "raw"))
    if takes_sparse(config):
        out = list(dict.fromkeys((dtype, "sparse") for dtype, _ in out))
    return out


def takes_sparse(config: Config) -> bool:
    """True if the chain labels frames no node of it thresholds (sparse input)."""
    from stream.run.pipeline import sparse_only

    return sparse_only([t["kind"] for t in config["node"]])


def loaded_kernels() -> int:
    """Signatures in memory of every numba dispatcher under nodes/."""
    from numba.core.registry import CPUDispatcher

    n = 0
    for name, mod in list(sys.modules.items()):
        if not name.startswith("nodes") or mod is None:
            continue
        for obj in list(vars(mod).values()):  # (the daemon counts from another thread)
            if isinstance(obj, CPUDispatcher):
                n += len(obj.overloads)
    return n


def compile_notices(say: Callable[[int], None]) -> _CompileClock:
    """A context in which every finished numba compile, in any thread, calls
    `say(compiled so far)`: a command's progress line says why it stands still."""
    def on_compile(_: Compiled) -> None:
        say(len(clock.compiled))

    clock = _CompileClock(on_compile)
    return clock


class _CompileClock:
    """Times every numba compile while installed (a listener of "numba:compile")."""

    def __init__(self, on_compile: Callable[[Compiled], None] | None = None):
        from numba.core import event

        self.event = event
        self.on_compile = on_compile
        self.compiled: list[Compiled] = []
        self._stack: list[float] = []
        clock = self

        class Listener(event.Listener):
            def on_start(self, ev):
                clock._stack.append(time.perf_counter())

            def on_end(self, ev):
                t0 = clock._stack.pop()
                d = ev.data["dispatcher"]
                sig = ", ".join(str(a) for a in ev.data["args"])
                c = Compiled(f"{d.py_func.__module__}.{d.py_func.__qualname__}", sig,
                             time.perf_counter() - t0, len(clock._stack))
                clock.compiled.append(c)
                if clock.on_compile is not None:
                    clock.on_compile(c)

        self.listener = Listener()

    def __enter__(self) -> _CompileClock:
        self.event.register("numba:compile", self.listener)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.event.unregister("numba:compile", self.listener)


def warmup(config: Config, progress: Callable[[int, int | None, bool], None] | None = None,
           stop: Callable[[], None] | None = None) -> WarmupReport:
    """Push a tiny scan of each `[source] warmup` frame kind through the config's
    runner; `progress(kernels, expected_total, compiling)` is called as kernels load;
    `stop()` before each message raises to stop the warm-up there."""
    from stream.run.runner import ScanRunner
    from stream.wire.codec import encode

    report = WarmupReport(frames=[f"{d}/{e}" for d, e in frame_kinds(config)])
    if not report.frames or not config["node"]:
        return report
    nodes = config.build_nodes()  # a bad chain is the config's error, not the warm-up copy's
    record = _read_record(config)
    total = record.get("kernels")
    t0 = time.perf_counter()

    def tick(_: Compiled | None = None) -> None:
        if progress is not None:
            progress(loaded_kernels(), total, bool(clock.compiled))

    text = config.text()
    with tempfile.TemporaryDirectory(prefix="peakstream-warmup-") as tmp, \
            _CompileClock(tick) as clock:
        warm = Config.from_text(text, f"{config.origin} (warm-up)", config.base)
        warm.override("output", "directory", tmp)
        # inline: the same kernels (numba's are per process), no worker threads to stop
        warm.override("workers", "kind", "inline")
        shape, motors = _frame_shape(nodes), _motor_names(nodes)
        for k, (dtype, encoding) in enumerate(frame_kinds(config)):
            runner = ScanRunner(warm, output_dir=tmp)
            try:
                for msg in _scan(f"warmup-{k}", shape, dtype, encoding, _counter_names(warm),
                                 config["source"]["detector"] or "detector", motors):
                    if stop is not None:
                        stop()
                    runner.handle(encode(msg))
            except BaseException as exc:
                if not isinstance(exc, Exception):  # stopped (SIGTERM, ^C): not finished
                    _drop_scan(runner)
                raise
            finally:
                runner.close("warm-up")
            for r in runner.results:
                if r["status"] != "success" or runner.last_error:
                    report.problems.append(f"{dtype}/{encoding}: {r['status']} "
                                           f"{runner.last_error}".strip())
            tick()
    report.compiled = clock.compiled
    report.kernels = loaded_kernels()  # all in memory: the same count on every start
    report.seconds = time.perf_counter() - t0
    if report.compiled or record.get("kernels") != report.kernels:
        _write_record(config, report)
    return report


def _drop_scan(runner: Any) -> None:
    """Close a warm-up scan as it is: finishing it would link and write its points,
    compiling the rest of the chain's kernels (10 s on a quiet machine with an empty
    cache, minutes on a busy one) after a SIGTERM that asked to stop."""
    cur, runner.current = runner.current, None
    if cur is not None:
        cur.collector.store.close_unchanged()


def warmed_before(config: Config) -> bool:
    """True if a warm-up of this config (and version) ran with this numba cache: its
    record is there, so the cache holds the kernels and loading them takes seconds."""
    return "kernels" in _read_record(config)


def expected_kernels(config: Config) -> int | None:
    """How many kernels this config loads, as the last warm-up counted (None: never
    warmed up with this numba cache and version)."""
    return _read_record(config).get("kernels")


def expected_seconds(config: Config) -> float:
    """About how long a cold warm-up of this config takes (the last one measured)."""
    return float(_read_record(config).get("cold_seconds", COLD_GUESS))


# ------------------------------------------------------------------ the scan


def _frame_shape(nodes: list) -> tuple[int, int]:
    """The detector shape a node's geometry was made for (a PONI file's max_shape), else
    the shape of the nodes' 2D arrays (dark, flat, mask, maps) if any, else SHAPE made
    as large as every node's `min_shape` (ROIs, crops) needs."""
    for node in nodes:
        made_for = getattr(node, "detector_shape", None)
        if made_for is not None:
            return (int(made_for[0]), int(made_for[1]))
    for node in nodes:
        for value in vars(node).values():
            if isinstance(value, np.ndarray) and value.ndim == 2 and min(value.shape) > 8:
                return (int(value.shape[0]), int(value.shape[1]))
    needs = [getattr(node, "min_shape", SHAPE) for node in nodes]
    return (max(int(n[0]) for n in [SHAPE, *needs]), max(int(n[1]) for n in [SHAPE, *needs]))


def _motor_names(nodes: list) -> list[str]:
    """omega and the motors the nodes need (ptyd's scan positions)."""
    names = ["omega"]
    for node in nodes:
        names += [m for m in getattr(node, "motors_needed", ()) if m not in names]
    return names


def _counter_names(config: Config) -> list[str]:
    names = {"monitor", "srcur"}
    for table in config["node"]:
        for key, value in table.items():
            if "counter" in key and isinstance(value, str) and value:
                names.add(value)
    return sorted(names)


def _scan(scan_id: str, shape: tuple[int, int], dtype: str, encoding: str,
          counters: list[str], detector: str, motors: list[str] = ("omega",)) -> list[Any]:
    """Start, NPOINTS points with two touching spots moving through them, end (motors
    other than omega stand still; "sparse": the pixels above 50, as a segmenter keeps)."""
    from stream.core.encoded import compress
    from stream.core.item import SparseFrame

    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    info = DetectorInfo(shape, dtype)
    msgs: list[Any] = [Start(scan_id, {detector: info}, list(motors), counters, NPOINTS,
                             {"kind": "sweep", "fast": "omega"}, {"source": "warmup"})]
    for i in range(NPOINTS):
        w = np.exp(-0.5 * ((i - NPOINTS / 2) / 1.2) ** 2)
        img = 10.0 + 5000.0 * w * (np.exp(-((y - ny / 2) ** 2 + (x - nx / 3) ** 2) / 8.0)
                                   + np.exp(-((y - ny / 2) ** 2 + (x - nx / 3 - 5) ** 2) / 8.0))
        frame = img.astype(dtype)
        if encoding == "sparse":
            row, col = np.nonzero(frame > 50)
            body = SparseFrame(shape, row.astype(np.uint16), col.astype(np.uint16),
                               frame[row, col])
        else:
            body = frame if encoding == "raw" else compress(frame, encoding)
        msgs.append(Point(scan_id, i, 1.7e9 + i, {m: float(i) if m == "omega" else 0.0
                                                  for m in motors},
                          {c: 1e4 for c in counters}, {detector: body}))
    msgs.append(End(scan_id, "success", NPOINTS))
    return msgs


# ------------------------------------------------------------------ the record


def _record_path() -> Path:
    from numba.core.config import CACHE_DIR

    base = Path(CACHE_DIR) if CACHE_DIR else Path(os.path.expanduser("~/.cache/peakstream"))
    return base / "peakstream-warmup.json"


def _record_key(config: Config) -> str:
    kinds = [t["kind"] for t in config["node"]]
    return json.dumps([__version__, kinds, config["source"]["warmup"]])


def _read_record(config: Config) -> dict[str, Any]:
    try:
        return json.loads(_record_path().read_text()).get(_record_key(config), {})
    except (OSError, ValueError, AttributeError):
        return {}


def _write_record(config: Config, report: WarmupReport) -> None:
    path = _record_path()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    entry = data.get(_record_key(config), {})
    entry["kernels"] = report.kernels
    if report.compiled:
        entry["cold_seconds"] = round(report.seconds, 1)
    data[_record_key(config)] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except OSError as exc:
        log.debug("warm-up record not written: %s", exc)
