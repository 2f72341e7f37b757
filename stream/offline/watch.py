"""What the driver of a batch replay says while its tasks run: the points each running
task has done (a small progress channel: the task logs an event on its dask worker at
most every `EVERY` s, the driver subscribes to the topic), and a line when a task's
worker is lost and dask runs the task again on another one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

TOPIC = "peakstream-progress"
EVERY = 0.5  # s between two progress events of one task


def task_progress() -> Callable[[int], None] | None:
    """In a dask task: a `progress(points)` callback that tells the driver, at most every
    EVERY s; None outside a dask worker (a scan replayed in this process)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ImportError, ValueError):
        return None
    last = [0.0]

    def progress(points: int) -> None:
        now = time.monotonic()
        if now - last[0] >= EVERY:
            last[0] = now
            worker.log_event(TOPIC, {"key": str(key), "points": int(points)})
    return progress


class TaskWatch:
    """The driver's side: points of the running tasks (by key) and their workers."""

    def __init__(self, client: Any, names: dict[str, str], say: Callable[[str], None]):
        self.client, self.names, self.say = client, names, say
        self.points: dict[str, int] = {}
        self.where: dict[str, str] = {}  # key -> the worker it was last seen running on
        self.lock = threading.Lock()
        client.subscribe_topic(TOPIC, self._event)

    def _event(self, event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) else event
        if isinstance(msg, dict) and msg.get("key") in self.names:
            with self.lock:
                self.points[msg["key"]] = int(msg.get("points", 0))

    def running(self) -> int:
        """Points done so far by the tasks still running."""
        with self.lock:
            return sum(self.points.values())

    def finished(self, key: str) -> None:
        with self.lock:
            self.points.pop(key, None)
        self.where.pop(key, None)

    def poll(self) -> None:
        """Say which tasks lost their worker and where dask runs them again. A task
        that moves to another worker while the one it was on is alive is a queued task
        dask's work stealing moved (`processing` lists queued tasks too): no rerun, its
        points stay counted."""
        try:
            processing = self.client.processing()
            workers = set(self.client.scheduler_info()["workers"])
        except (OSError, KeyError):
            return
        now = {str(k): w for w, keys in processing.items() for k in keys}
        for key, worker in list(self.where.items()):
            if worker not in workers and key not in now:
                self.say(f"{self.names[key]}: its worker {worker} was lost; dask runs the "
                         f"task again on another worker")
                self.where[key] = ""
                with self.lock:
                    self.points.pop(key, None)
        for key, worker in now.items():
            if key not in self.names:
                continue
            before = self.where.get(key)
            if before is not None and before != worker and before not in workers:
                self.say(f"{self.names[key]}: running again on {worker}"
                         f"{f' (was on {before})' if before else ''}")
                with self.lock:
                    self.points.pop(key, None)
            self.where[key] = worker

    def close(self) -> None:
        try:
            self.client.unsubscribe_topic(TOPIC)
        except (KeyError, ValueError):
            pass


def report_result(fut: Any, job: Any, results: dict[int, dict[str, Any]], i: int,
                  say: Callable[[str], None]) -> int:
    """A scan's task has ended: its summary into `results`, a line; its points."""
    try:
        r = fut.result()
    except Exception as exc:  # the task raised, or its workers kept dying
        r = {"file": str(job.path), "status": "fail", "reason": f"{type(exc).__name__}: "
             f"{exc}", "points": 0, "cliques": 0, "seconds": 0.0}
    r.setdefault("scan_id", job.scan_id)
    results[i] = r
    say(f"{job.scan_id}: {r['status']}, {r.get('points', 0)} points, "
        f"{r.get('cliques', 0)} cliques in {r.get('seconds', 0.0):.1f} s"
        f"{' on ' + r['host'] if r.get('host') else ''}"
        f"{' (' + r['reason'] + ')' if r.get('reason') else ''}"
        f"{f' -> {job.path}' if job.path is not None and job.path.exists() else '; no file'}")
    return int(r.get("points", 0))
