"""Block replay of sparse recordings: many points per step, the same output file.

A sparse recording (ImageD11 sparse HDF5, our own output, a frame cache)
already holds the pixels above the threshold, so a point only needs the
nodes that act on sparse pixels (`nodes.sparse`: threshold, normalise,
correct's mask, each frame as point by point), label, properties and the
linker. Point by point that is mostly Python overhead
(decode, Item, nodes, collector, store) for a few pixels, and nothing at all
for an empty frame. Here blocks of consecutive points go through the same
kernels in one call each (`nodes.block`, `Linker.add_block`) and their rows
are appended to the same store tables: the file is the one the point-by-point
replay writes (tests/test_batch.py checks it table by table).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.config.schema import Config
from stream.core.block import SparseBlock
from stream.core.messages import Start
from stream.core.scan import Scan
from stream.run.fits import fit_failed, log_fit_failed
from stream.run.openscan import record_warnings
from stream.run.pipeline import Pipeline
from stream.run.runner import COUNTERS
from stream.store.rows import STATUS_CODE, RowWriter
from stream.store.scanfile import ScanStore

log = logging.getLogger(__name__)


def block_replay_possible(config: Config) -> bool:
    """True if the config's chain for sparse frames has a block form."""
    from nodes.block import block_chain_ok

    return block_chain_ok(Pipeline(config.build_nodes()).sparse_chain)


def replay_blocks(config: Config, start: Start, blocks: Iterable[SparseBlock],
                  path: str | Path,
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Process a sparse recording block by block into the output file `path`."""
    from nodes.block import block_chain_ok, label_frames, prefix_frames, properties_frames
    from nodes.link.linker import Linker, PeakBlock

    scan = Scan.from_start(start)
    try:
        detector, info = scan.detector(config["source"]["detector"] or None)
    except KeyError as exc:  # the config names a detector the recording lacks
        raise ValueError(exc.args[0]) from None
    pipeline = Pipeline(config.build_nodes())
    if not block_chain_ok(pipeline.sparse_chain):
        raise ValueError("block replay needs the sparse chain [threshold / normalise / "
                         "correct ->] label -> properties, not "
                         + " -> ".join(n.kind for n in pipeline.sparse_chain))
    store = ScanStore.for_scan(path, scan, config, detector)
    rows = RowWriter(store, start.motors, start.counters)
    store.set_shape(info.shape, info.dtype)
    counters: Counter = Counter({k: 0 for k in COUNTERS})
    status, reason = "success", ""
    try:
        linker = Linker(**config["linker"])
        linker.setup(scan)
        pipeline.setup(scan)  # (the sparse chain, for this scan's start)
        record_warnings(store, start.scan_id, pipeline.setup_warnings)
        *prefix, label, _ = pipeline.sparse_chain
        walker = TrajectoryWalker(scan.trajectory)
        npoints = 0
        for block in blocks:
            if block.first != npoints:
                raise ValueError(f"block starts at point {block.first}, expected {npoints}")
            if block.ok is not None and not block.ok.all():  # open_blocks sends these
                raise ValueError("block replay writes every point ok: points the "
                                 "recording lacks go point by point")
            if npoints == 0:  # as point by point (`OpenScan.taken`)
                record_warnings(store, start.scan_id, [f"sparse frames: {note}" for note
                                                       in pipeline.sparse_notes], block.first)
            row, col, intensity, nnz, flags = prefix_frames(
                prefix, info.shape, block.first, block.row, block.col,
                block.intensity.astype(np.float32, copy=False), block.nnz, block.counters)
            row, col, intensity, labels, nnz, npeaks = label_frames(
                label, row, col, intensity, nnz)
            peaks = properties_frames(row, col, intensity, labels, nnz, npeaks)
            n = block.n
            ok = np.ones(n, np.bool_)
            tb = walker.block(block.first, ok, block.motors)
            result = linker.add_block(PeakBlock(
                block.first, info.shape, ok, nnz, row, col, labels, npeaks, peaks,
                block.motors, (tb.link_a, tb.link_b), tb.close_at, intensity))
            point_id = block.first + np.arange(n, dtype=np.int64)
            for k, f in enumerate(tb.flags):  # the nodes' flags, then the trajectory's
                if f:
                    flags.setdefault(k, []).append(f"trajectory: {f}")
            texts = np.full(n, "", object)
            for k, f in flags.items():
                texts[k] = json.dumps(f)
            rows.points(point_id, block.time, np.full(n, STATUS_CODE["ok"], np.uint8), texts,
                        block.motors, block.counters)
            rows.links(tb.link_a, tb.link_b, np.array(tb.kind, object))
            rows.flag_events(block.first, flags, block.time)
            rows.sparse(row, col, intensity, labels, nnz)
            rows.peaks(np.repeat(point_id, npeaks), peaks)
            counters["cliques"] += rows.link_result(result)
            counters["fit_failed"] = fit_failed(linker)
            npoints += n
            counters.update(received=n, accepted=n, processed=n, linked=n, written=n)
            store.maybe_flush(_now(), counters)
            if progress is not None:
                progress(npoints)
        counters["cliques"] += rows.link_result(linker.finish())
        counters["fit_failed"] = fit_failed(linker)
        log_fit_failed(path, counters["fit_failed"])
    except Exception as exc:
        status, reason = "fail", f"{type(exc).__name__}: {exc}"
        log.error("scan %s: block replay failed: %s", start.scan_id, reason)
        store.close(status, reason, counters)
        raise
    store.close(status, reason, counters)
    return {"scan_id": start.scan_id, "status": status, "reason": reason, "file": str(path),
            **counters}


@dataclass
class TrajectoryBlock:
    """What the trajectory says about a block of points, asked as the collector asks it:
    observe each point in order, then its links and its close step."""

    flags: list[str]  # "" or why the point is flagged (never linked)
    link_a: np.ndarray  # int64: earlier point
    link_b: np.ndarray  # int64: point of the block
    kind: list[str]
    close_at: np.ndarray  # int64 (n,) max(last_neighbour(p), p); -1 for points without data


class TrajectoryWalker:
    """Drives a scan's trajectory over blocks of points, remembering which earlier
    points can still be linked to (the collector's rule for the links table)."""

    def __init__(self, trajectory: Any):
        self.trajectory = trajectory
        self.linkable: dict[int, int] = {}  # point -> its close step

    def block(self, first: int, ok: np.ndarray, motors: dict[str, np.ndarray]) -> TrajectoryBlock:
        if _plain_sweep(self.trajectory):
            return self._sweep_block(first, ok, motors)
        return self._any_block(first, ok, motors)

    def _any_block(self, first: int, ok: np.ndarray,
                   motors: dict[str, np.ndarray]) -> TrajectoryBlock:
        """Any trajectory: its methods, point after point."""
        traj = self.trajectory
        n = ok.shape[0]
        names = list(motors)
        values = list(zip(*(motors[m].tolist() for m in names), strict=True)) if names else \
            [()] * n
        flags: list[str] = []
        link_a: list[int] = []
        link_b: list[int] = []
        kinds: list[str] = []
        close_at = np.full(n, -1, np.int64)
        for k, good in enumerate(ok.tolist()):
            p = first + k
            flagged = traj.observe(p, dict(zip(names, values[k], strict=True)) if good else {})
            flags.append(flagged if good else "")
            if not good:
                continue
            close_at[k] = max(int(traj.last_neighbour(p)), p)
            if flagged:
                continue
            for i, kind in traj.links_before(p):
                if i in self.linkable:
                    link_a.append(i)
                    link_b.append(p)
                    kinds.append(kind)
            if close_at[k] > p:
                self.linkable[p] = int(close_at[k])
        self._forget(first + n - 1)
        return TrajectoryBlock(flags, np.array(link_a, np.int64), np.array(link_b, np.int64),
                               kinds, close_at)

    def _sweep_block(self, first: int, ok: np.ndarray,
                     motors: dict[str, np.ndarray]) -> TrajectoryBlock:
        """A sweep without wrap or tolerance, in arrays: j links j - 1 unless either is
        flagged (a required motor missing or NaN); the same answers as `_any_block`
        (tests/test_batch.py compares them)."""
        traj = self.trajectory
        n = ok.shape[0]
        p = first + np.arange(n, dtype=np.int64)
        bad = np.zeros(n, np.bool_)
        for m in traj.required:
            values = motors.get(m)
            bad |= ~np.isfinite(values) if values is not None else True
        flagged = np.where(ok, bad, len(traj.required) > 0)
        flags = [""] * n
        names = list(motors)
        for k in np.flatnonzero(flagged & ok).tolist():  # the trajectory's own words
            flags[k] = traj.observe(first + k, {m: float(motors[m][k]) for m in names})
        npoints = traj.npoints
        close_at = np.where(flagged | ((p + 1 >= npoints) if npoints is not None else False),
                            p, p + 1)
        close_at[~ok] = -1
        linkable = ok & ~flagged & (close_at > p)
        before = np.r_[first - 1 in self.linkable, linkable[:-1]]
        link = ok & ~flagged & before & (p > 0)
        link_b = p[link]
        self.linkable.update(zip(p[linkable][-1:].tolist(), close_at[linkable][-1:].tolist(),
                                 strict=True))
        self._forget(first + n - 1)
        return TrajectoryBlock(flags, link_b - 1, link_b, [traj.fast] * link_b.shape[0],
                               close_at)

    def _forget(self, last: int) -> None:
        """Drop the points no point after `last` can link to."""
        if len(self.linkable) > 64:
            self.linkable = {i: c for i, c in self.linkable.items() if c > last}


def _plain_sweep(trajectory: Any) -> bool:
    from stream.core.trajectory import Sweep

    return (type(trajectory) is Sweep and not trajectory.wrap
            and trajectory.tolerance is None)


def _now() -> float:
    import time

    return time.monotonic()


def open_blocks(inputs: list[str], config: Config, *, format: str = "auto",
                images: Any = (), motors: Any = None, counters: Any = None, time: Any = None,
                scan_id: str | None = None, detector: str | None = None,
                first: int | None = None, last: int | None = None,
                trajectory: dict | None = None):
    """(start, blocks) if this recording can be replayed in blocks, else None.

    Block replay takes one sparse recording (ImageD11 sparse HDF5), or a range of its
    points (`first`..`last`, ids from 0 again, as point by point: a chunk of a
    cluster replay), with a chain label -> properties; options that change points
    one by one (motor / counter / time values) and recordings that lack points (an
    export of a scan with missing points) go point by point.
    """
    import dataclasses

    from stream.sources.files import detect_format

    if (len(inputs) != 1 or list(images or ()) or motors or counters or time is not None
            or detector):
        return None
    kind = format if format != "auto" else detect_format(inputs[0])
    if kind != "imaged11" or not block_replay_possible(config):
        return None
    from stream.sources.files.imaged11 import read_imaged11_blocks

    start, blocks = read_imaged11_blocks(inputs[0], scan_id=scan_id)
    if start.meta.get("absent_points"):  # point by point: the runner records them missing
        return None
    if first is not None or last is not None:
        from stream.sources.files.common import select

        lo, hi = select(start.npoints, first, last, start.scan_id)
        start = dataclasses.replace(start, npoints=hi - lo + 1)
        blocks = blocks_between(blocks, lo, hi)
    if trajectory:
        start = dataclasses.replace(start, trajectory=dict(trajectory))
    return start, blocks


def blocks_between(blocks: Iterable[SparseBlock], lo: int, hi: int):
    """The points lo..hi (inclusive) of `blocks`, their ids counted from lo."""
    import dataclasses

    for b in blocks:
        a, z = max(lo - b.first, 0), min(hi - b.first + 1, b.n)
        if a >= z:
            if b.first > hi:
                return
            continue
        ptr = np.zeros(b.n + 1, np.int64)
        np.cumsum(b.nnz, out=ptr[1:])
        px = slice(int(ptr[a]), int(ptr[z]))
        yield dataclasses.replace(
            b, first=b.first + a - lo, nnz=b.nnz[a:z], row=b.row[px], col=b.col[px],
            intensity=b.intensity[px], time=b.time[a:z],
            motors={k: v[a:z] for k, v in b.motors.items()},
            counters={k: v[a:z] for k, v in b.counters.items()},
            ok=None if b.ok is None else b.ok[a:z])
