"""Executors: where the workers' chains run (inline, threads, processes).

All take the same numbered tasks and give back the same results
(`stream.run.tasks`: wire messages, or from threads the `Result` itself); the
runner cannot tell them apart except by speed.

* `InlineExecutor`: one `Worker` called in the caller's thread; every task and
  result still goes through the wire encoding, so serialisation bugs show in
  single-process tests.
* `ThreadPool` (`stream.run.threadpool`): N worker threads on two queues, the
  decoded point in and the `Result` out, without the wire encoding.
* `Dispatcher` (`stream.run.dispatch`): N workers in processes (or threads that
  workers of other hosts join) on ZeroMQ sockets, with credits, heartbeats and
  reassignment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.config.schema import Config
from stream.core.threads import usable_cores
from stream.run.dispatch import Dispatcher
from stream.run.tasks import Params, encode_scan, encode_task
from stream.run.threadpool import ThreadPool
from stream.run.workers import Worker


def default_count(kind: str = "threads") -> int:
    """Workers for `count = 0`: threads, one per core (the kernels release the GIL and
    the receiver/collector thread is mostly waiting: bench_stream is faster so);
    processes, one per core less the main process's."""
    cores = usable_cores()
    return cores if kind == "threads" else max(1, cores - 1)


def make_executor(config: Config) -> InlineExecutor | ThreadPool | Dispatcher:
    """The executor that the config's [workers] group asks for: threads without an
    endpoint share queues with the runner; with one, workers on other hosts may join
    them, through the dispatcher."""
    w = config["workers"]
    if w["kind"] == "inline":
        return InlineExecutor(config)
    if w["kind"] == "threads" and not w["endpoint"]:
        return ThreadPool(config, w["count"] or default_count("threads"))
    keys = str(Path(config.base) / w["keys"]) if w["keys"] else ""
    return Dispatcher(config, w["kind"], w["count"] or default_count(w["kind"]),
                      w["endpoint"], keys=keys,
                      heartbeat=w["heartbeat"], timeout=w["heartbeat_timeout"])


def queue_bound(config: Config) -> int:
    """Points allowed between receiver and collector ([workers] queue; 0: two per worker
    and one more, at least 5, which keeps the lag within 5 on a 2-core machine)."""
    w = config["workers"]
    if w["queue"]:
        return w["queue"]
    count = 1 if w["kind"] == "inline" else (w["count"] or default_count(w["kind"]))
    return max(5, 2 * count + 1)


class InlineExecutor:
    """The chain in the caller's thread, through the same messages as the workers."""

    kind = "inline"
    sockets: tuple = ()  # nothing to wait on: results are there at once

    def __init__(self, config: Config):
        self.worker = Worker(config)
        self.done: list[list] = []

    @property
    def in_flight(self) -> int:
        return len(self.done)

    def start_scan(self, scan: int, start_parts: list, detector: str,
                   max_frame_bytes: int) -> None:
        self.worker.handle(encode_scan(scan, start_parts, detector, max_frame_bytes))

    def submit(self, seq: int, scan: int, point_id: int, parts: list,
               params: Params | None = None, preview: int = 0,
               point: Any = None) -> None:
        """A task, through the wire encoding (`point` unused: decoded again on purpose)."""
        self.done.append(self.worker.handle(encode_task(seq, scan, point_id, parts, params,
                                                        preview)))

    def collect(self, timeout: float = 0.0) -> list[list]:
        out, self.done = self.done, []
        return out

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": 1, "queued": 0, "at_workers": len(self.done),
                "reassigned": 0, "restarted": 0}

    def close(self) -> None:
        self.worker.close()
