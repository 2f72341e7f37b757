"""The executor of worker threads in this process (`[workers] kind = "threads"`).

N threads, each with a `Worker` chain of its own, take the runner's tasks
from one queue and leave their results on another: no socket, no copy and no
I/O thread between them, and no wire encoding either: a task is the point the
runner decoded, a result the `Result` itself (`stream.run.tasks.result_of`).
(The `Dispatcher`'s ZeroMQ path, with credits, heartbeats and reassignment, is
for worker processes and for workers on other hosts; through it a thread's
point crossed four inproc hops and an I/O thread, ~1 ms of CPU per EIGER2 4M
frame, tools/bench_stream.py.)

The runner waits on a pipe that gets a byte per result, so that its poller
wakes for results and for the source alike. A task is never lost: an error of
ours in a chain is that point's bad result, and the thread goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import select
from collections import deque
from typing import Any

from stream.config.base import ConfigError
from stream.config.schema import Config
from stream.core.item import Item
from stream.core.messages import Point
from stream.core.threads import named_thread
from stream.run.tasks import Params, Result, encode_scan, result_of
from stream.run.workers import Worker

log = logging.getLogger(__name__)

SETUP = "setup"  # a job that only sets the taking thread up for the current scan


class ThreadPool:
    """`count` chains in threads; tasks in, results out, in the runner's wire form."""

    kind = "threads"

    def __init__(self, config: Config, count: int):
        self.config, self.count = config, count
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.results: deque[list] = deque()
        self._bell_r, self._bell_w = os.pipe()
        os.set_blocking(self._bell_r, False)
        os.set_blocking(self._bell_w, False)
        self.sockets = (self._bell_r,)  # readable when results came (zmq.Poller takes fds)
        self.scan: tuple[int, list] | None = None  # key, scan message
        self.out = 0  # tasks submitted and not yet collected
        self.threads = [named_thread(self._serve, f"worker-{i}") for i in range(count)]
        for t in self.threads:
            t.start()
        log.info("%d worker threads", count)

    # ------------------------------------------------------------ the executor API

    @property
    def in_flight(self) -> int:
        return self.out

    def start_scan(self, scan: int, start_parts: list, detector: str,
                   max_frame_bytes: int) -> None:
        """Every thread sets its chain up now (in parallel), not on its first point."""
        self.scan = (scan, encode_scan(scan, [bytes(getattr(p, "buffer", p))
                                              for p in start_parts], detector, max_frame_bytes))
        for _ in self.threads:
            self.jobs.put(SETUP)

    def submit(self, seq: int, scan: int, point_id: int, parts: list,
               params: Params | None = None, preview: int = 0,
               point: Point | None = None) -> None:
        """A task; `point`, the decoded message when the runner has it, is not decoded
        again by the worker."""
        self.out += 1
        self.jobs.put((seq, scan, point_id, parts if point is None else point,
                       params if params is not None and params[0] else None, preview))

    def collect(self, timeout: float = 0.0) -> list[Result]:
        """Results that came back; waits up to `timeout` s for one if points are out."""
        if not self.results and self.out and timeout > 0:
            select.select([self._bell_r], [], [], timeout)
        try:  # the bell first, then the results: a result put after this rings again
            while len(os.read(self._bell_r, 4096)) == 4096:  # (less: the pipe is empty)
                pass
        except BlockingIOError:
            pass
        out = []
        while self.results:
            out.append(self.results.popleft())
        self.out -= len(out)
        return out

    def status(self) -> dict[str, Any]:
        queued = self.jobs.qsize()
        return {"kind": self.kind, "workers": sum(t.is_alive() for t in self.threads),
                "queued": queued, "at_workers": max(self.out - len(self.results) - queued, 0),
                "reassigned": 0, "restarted": 0}

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join(timeout=30)  # a point in a kernel finishes first
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:  # its bell must not ring into an fd number reused by a later file
            log.warning("worker threads %s still busy after 30 s; left to finish",
                        ", ".join(stuck))
            return
        os.close(self._bell_r)
        os.close(self._bell_w)

    # ------------------------------------------------------------ a thread

    def _serve(self) -> None:
        try:
            worker: Worker | None = Worker(self.config)
            broken = ""
        except ConfigError as exc:  # the runner's own build of the chain says so, once
            worker, broken = None, f"worker could not build its chain: {exc}"
        except Exception as exc:  # the runner builds the same chain: a bug of ours
            log.exception("worker thread: cannot build the chain")
            worker, broken = None, f"worker could not build its chain: {exc}"
        scan_key = None
        while (job := self.jobs.get()) is not None:
            current = self.scan
            if worker is not None and current is not None and scan_key != current[0] and (
                    job == SETUP or job[1] == current[0]):  # (an older scan's point keeps
                scan_key = current[0]  # the setup it had)
                worker.handle(current[1])
            if job == SETUP:
                continue
            seq, scan, point_id, point, params, preview = job
            try:
                if worker is None:
                    raise RuntimeError(broken)
                out = worker.run(seq, scan, point_id, point, params, preview)
            except Exception as exc:  # never lose a point to an error of ours
                log.exception("worker thread: point %d", point_id)
                out = result_of(seq, scan, Item(point_id, ""), "bad",
                                f"{type(exc).__name__}: {exc}")
            self.results.append(out)
            try:
                os.write(self._bell_w, b"\0")
            except BlockingIOError:  # the pipe is full of rings: the runner is awake
                pass
        if worker is not None:
            worker.close()
