"""Workers: the per-point part of the chain, wherever it runs.

A `Worker` holds one node chain built from the effective config text. Per scan
it is given the start message (`scan`), per point a task: the point's wire
message as it arrived, numbered by the runner (`seq`). It decodes the point,
reads its frame, runs the chain and answers with the sparse result in its own
wire form: a msgpack header and raw buffers (sparse pixels, labels, their
runs when the chain found them, the 2D peak columns); nothing is ever pickled.
Inline, threads and processes run this same class on the same bytes; only the
transport differs (`stream.dispatch`).

`serve(endpoint)` is a worker on a ZeroMQ DEALER socket, in a thread or in a
process of its own (`python -m stream.run.workers ENDPOINT`): an I/O thread owns
the socket, sends a heartbeat every `heartbeat` s even while the chain is
busy, and gives up when the dispatcher has been silent for `orphan` s.

Messages (part 0 a msgpack map with `type`):

    dispatcher -> worker   config {text, base, calibration}; scan {scan, detector,
                           max_frame_bytes} + start message; task {seq, scan,
                           point_id, [params], [preview]} + the point's parts;
                           heartbeat; reset; stop
    dispatcher -> worker   refused {reason} (a hello of another peakstream version, or
                           an unfit worker)
    worker -> dispatcher   hello {pid, thread, parent, version, build}; ready {credits};
                           unfit {reason}; result {seq, scan, ..., [preview]} + buffers;
                           heartbeat

The config message carries the calibration the dispatcher's process loaded at its
start (`Config.calibration`: each dark, flat, mask, PONI, ... file and its sha256),
which its scan files record. A worker whose own chain loaded other contents (a dark
taken again, then a worker started again after a crash; a worker of another host)
answers unfit instead of ready, and the dispatcher refuses it: its points would
silently mix two calibrations.

Parameter changes (`set` on the control socket) travel with the tasks: a task
carries `params` = [version, {node: {key: value}}], every change made so far
in the session, and the worker sets its nodes to them (and back to the
config's values for keys no longer changed) before it processes the point. So
a point is processed with the parameters in force when the runner accepted it,
whichever worker gets it, also after a reassignment. A task with `preview` =
b asks for a b x b binned image of the frame as it arrived (before any node),
for the live lane; a sparse frame's preview is binned from its pixels.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from stream.config.schema import Config
from stream.core.item import Item, SparseFrame
from stream.core.messages import FrameRef, MessageError, Point, Start
from stream.core.scan import Scan
from stream.core.threads import named_thread
from stream.run.pipeline import Pipeline, PointError
from stream.run.preview import binned
from stream.run.tasks import CREDITS, Result, encode_result, header_of, pack, result_of
from stream.run.worker_io import io_loop
from stream.wire.codec import decode

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ the worker


class Worker:
    """One chain of per-point nodes; `handle(parts)` answers a task with a result."""

    def __init__(self, config: Config, packed: bool = False):
        self.config = config
        self.packed = packed  # results for a socket: the buffers in one part
        self.text = config.text()
        self.pipeline = Pipeline(config.build_nodes())
        self.scan_key: int | None = None
        self.scan: Scan | None = None
        self.detector = ""
        self.max_frame_bytes: int | None = None
        self.setup_error = ""
        self._refs: dict[str, Any] = {}
        self.params_version = 0
        self._params: dict[str, dict[str, Any]] = {}  # the changes in force
        self._base: dict[tuple[str, str], Any] = {}  # the config's values of changed keys

    def handle(self, parts: list) -> list | None:
        """A scan message (sets the chain up, no answer) or a task (its result)."""
        header = header_of(parts)
        if header["type"] == "scan":
            self._setup(header, parts[1:])
            return None
        if header["type"] == "task":
            return self._process(header, parts[1:])
        raise ValueError(f"worker: unknown message type {header.get('type')!r}")

    def unfit(self, recorded: dict[str, Any] | None) -> str:
        """Why this chain must not process the dispatcher's points: its calibration files
        (dark, flat, mask, PONI, ...) are not what the dispatcher's process loaded at its
        start, the `recorded` calibration its scan files record (a dark taken again, then
        a worker started again after a crash, or a worker of another host); "" if none."""
        from stream.store.identity import calibration_changes

        changed = calibration_changes(recorded, self.config.calibration(),
                                      "when the processor started")
        if not changed:
            return ""
        return ("its calibration files are not what the processor loaded at its start "
                "(and records in its scan files): " + "; ".join(changed))

    def close(self) -> None:
        from stream.run.refs import close_refs

        close_refs(self._refs.values())
        self._refs.clear()

    def _setup(self, header: dict, start_parts: list) -> None:
        self.scan_key = header["scan"]
        self.detector = header["detector"]
        self.max_frame_bytes = header["max_frame_bytes"]
        self.setup_error = ""
        try:
            start = decode(start_parts)
            if not isinstance(start, Start):
                raise MessageError("the scan message holds no start message")
            self.scan = Scan.from_start(start)
            self.pipeline.setup(self.scan)
        except Exception as exc:  # the runner's own setup normally fails first
            self.setup_error = f"setup failed: {exc}"
            log.error("worker %d: %s", os.getpid(), self.setup_error)

    def _process(self, header: dict, point_parts: list) -> list:
        res = self.run(header["seq"], header["scan"], header["point_id"], point_parts,
                       header.get("params"), header.get("preview", 0))
        return encode_result(res.seq, res.scan, res.item, res.status, res.reason,
                             preview=res.preview, packed=self.packed)

    def run(self, seq: int, scan: int, pid: int, point: list | Point,
            params: list | tuple | None = None, preview: int = 0) -> Result:
        """A task's result: `point` is the point's wire message, or the `Point` the runner
        decoded from it (worker threads: it is not decoded twice)."""
        item = Item(pid, self.detector)
        if scan != self.scan_key or self.scan is None or self.setup_error:
            why = self.setup_error or f"worker was not set up for scan #{scan}"
            return result_of(seq, scan, item, "bad", why)
        binned_frame = None
        try:
            self._set_params(params)
            if not isinstance(point, Point):
                point = decode(point, self.max_frame_bytes)
            item = Item(pid, self.detector, point.time, point.motors, point.counters)
            item.flags.extend(str(f) for f in point.extra.get("flags") or [])
            frame = self._frame(point)
            if preview:
                binned_frame = binned(frame, int(preview))
            if isinstance(frame, SparseFrame):
                item.sparse = frame
            else:
                item.frame = frame
            item = self.pipeline.process(item)
        except (PointError, MessageError, OSError, KeyError, ValueError) as exc:
            return result_of(seq, scan, item, "bad", str(exc))
        except Exception as exc:  # a bug of ours: loud, but the point is only bad
            log.exception("worker %d: point %d", os.getpid(), pid)
            return result_of(seq, scan, item, "bad", f"{type(exc).__name__}: {exc}")
        if item.sparse is None:
            return result_of(seq, scan, item, "bad", "no sparse frame")
        return result_of(seq, scan, item, "ok", preview=binned_frame)

    def _set_params(self, params: list | None) -> None:
        """The nodes' parameters as the task asks (version 0: the config's own)."""
        version, changes = (0, {}) if params is None else params
        if version == self.params_version:
            return
        from stream.core.node import set_param

        undo = {k for k in self._base if k[1] not in changes.get(k[0], {})}
        for node_kind, key in undo:
            setattr(self.pipeline.node(node_kind), key, self._base.pop((node_kind, key)))
        for node_kind, values in changes.items():
            node = self.pipeline.node(node_kind)
            for key, value in values.items():
                self._base.setdefault((node_kind, key), getattr(node, key))
                set_param(node, key, value)
        self.params_version, self._params = version, changes

    def _frame(self, point: Any) -> np.ndarray | SparseFrame:
        info = self.scan.start.detectors[self.detector]
        frame = point.frames.get(self.detector)
        if isinstance(point.extra.get("error"), str):
            raise MessageError(point.extra["error"])
        if frame is None:
            raise MessageError(f"point {point.point_id} has no frame for {self.detector!r}")
        if isinstance(frame, FrameRef):
            frame = self._read_ref(frame)
        if isinstance(frame, SparseFrame):
            if frame.shape != info.shape:
                raise MessageError(f"sparse frame is {list(frame.shape)}, start announced "
                                   f"{list(info.shape)}")
            return frame
        if frame.shape != info.shape or frame.dtype != np.dtype(info.dtype):
            raise MessageError(f"frame is {list(frame.shape)} {frame.dtype}, start announced "
                               f"{list(info.shape)} {info.dtype}")
        return frame

    def _read_ref(self, ref: FrameRef) -> np.ndarray:
        """A frame stored in an HDF5 file (`stream.run.refs`: off unless allowed, only
        regular files below the allowed directories, the size checked before reading)."""
        from stream.run.refs import read_ref

        src = self.config["source"]
        if not src["allow_refs"]:
            raise MessageError("frame references are off ([source] allow_refs)")
        dirs = [self.config.base / d for d in src["ref_dirs"]]
        return read_ref(ref, dirs, self.max_frame_bytes, self._refs)


# ------------------------------------------------------------------ serving on a socket


class Refused(RuntimeError):
    """The dispatcher refused this worker (another peakstream version)."""


def serve(endpoint: str, context: zmq.Context | None = None, *, heartbeat: float = 0.5,
          orphan: float = 60.0, parent: int | None = None, keys: str | None = None,
          on_result: Any = None, freeze_gc: bool = False,
          warm: Callable[[Config], Any] | None = None, name: str = "worker") -> None:
    """Be a worker of the dispatcher at `endpoint` until it says stop or goes silent.

    The calling thread runs the chain; an I/O thread owns the DEALER socket (a
    CurveZMQ client with the worker pair `name` of the key directory `keys`, if given).
    RuntimeError when the I/O thread fails (its reason): the chain must not wait for
    tasks that can no longer come.
    `freeze_gc`: the worker is a process of its own (never a thread of `run`).
    `warm(config)`: called with the dispatcher's config before this worker says it is
    ready, so that no point waits here while kernels compile (the I/O thread keeps
    the heartbeat going meanwhile).
    """
    ctx = context or zmq.Context.instance()
    inner = f"inproc://peakstream-worker-{uuid.uuid4().hex}"
    chain = ctx.socket(zmq.PAIR)
    chain.bind(inner)
    io = named_thread(io_loop, "worker-io", args=(ctx, endpoint, inner, heartbeat, orphan,
                                                   parent, threading.get_ident(), keys,
                                                   name))
    io.start()
    worker: Worker | None = None
    frozen = False
    try:
        while True:
            parts = chain.recv_multipart(copy=False)
            kind = header_of(parts)["type"]
            if kind == "stop":
                break
            if kind == "failed":  # the I/O thread has gone: nothing more will come
                h = header_of(parts)
                raise (Refused if h.get("refused") else RuntimeError)(h["reason"])
            if kind == "config":
                h = header_of(parts)
                worker = _configure(h, worker)
                unfit = worker.unfit(h.get("calibration"))
                if unfit:  # the dispatcher refuses us with this reason, we end
                    chain.send(pack({"type": "unfit", "reason": unfit}))
                    continue
                if warm is not None:
                    warm(worker.config)
                chain.send(pack({"type": "ready", "credits": CREDITS}))
            elif worker is not None:
                out = worker.handle(parts)
                if freeze_gc and kind == "scan" and not frozen:  # a process of its own:
                    gc.collect()  # what its first setup loaded lives on, out of later full
                    gc.freeze()  # collections (as `run` does after its first scan, P5)
                    frozen = True
                if out is not None:
                    chain.send_multipart(out, copy=False)
                    if on_result is not None:
                        on_result()
    finally:  # also after an error of ours: the I/O thread must not answer for us
        if worker is not None:
            worker.close()
        try:
            chain.send(pack({"type": "bye"}), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the I/O thread has gone already (it passed us the stop)
        chain.close(linger=1000)
        io.join(timeout=5)


def _configure(h: dict, old: Worker | None) -> Worker:
    if old is not None and old.text == h["text"]:
        return old  # registered again after a reset: the same chain will do
    if old is not None:
        old.close()
    return Worker(Config.from_text(h["text"], "<dispatcher config>", h["base"]), packed=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m stream.run.workers",
                                description="A peakstream worker: connects to the dispatcher "
                                            "at ENDPOINT and runs the chain on its points.")
    p.add_argument("endpoint")
    p.add_argument("--heartbeat", type=float, default=0.5)
    p.add_argument("--orphan", type=float, default=60.0,
                   help="s without a word from the dispatcher before giving up (default 60)")
    p.add_argument("--parent", type=int, help="stop when this process is gone")
    p.add_argument("--keys", help="CurveZMQ key directory (worker pair, server public key)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for `run`, which stops us
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(args.endpoint, heartbeat=args.heartbeat,
              orphan=math.inf if args.orphan <= 0 else args.orphan, parent=args.parent,
              keys=args.keys, freeze_gc=True)
    except Refused as exc:  # the dispatcher logs why; no traceback for it
        log.warning("worker %d: %s", os.getpid(), exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
