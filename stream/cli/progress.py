"""Progress lines on stderr, one way for every command (run, replay, simulate, stats,
diffmap): redrawn in place on a terminal, a new line every `interval` s otherwise
(logs, pipes), never on stdout (where the results go)."""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressLine:
    """`line(done, total)`: "label: done/total (rate/s) extra", at most every interval;
    the last one (done == total, or `force`) always. `bar=True` draws a bar instead of
    the rate. `done()` ends the line on a terminal."""

    def __init__(self, label: str, total: int | None = None, interval: float = 2.0,
                 quiet: bool = False, bar: bool = False):
        self.label, self.total, self.quiet, self.bar = label, total, quiet, bar
        self.tty = sys.stderr.isatty()
        self.interval = 0.2 if self.tty else interval
        self.t0 = time.monotonic()
        self.last = -float("inf")
        self.drawn = False
        self._final: tuple | None = None  # the last line drawn, when it was a final one

    def __call__(self, done: int, total: int | None = None, extra: str = "",
                 force: bool = False, label: str | None = None) -> None:
        total = total if total is not None else self.total
        now = time.monotonic()
        final = force or (total is not None and done >= total)
        if self.quiet or (not final and now - self.last < self.interval):
            return
        if final and self._final == (done, total, extra, label):
            return  # the last line, once (callers report the end more than once)
        self._final = (done, total, extra, label) if final else None
        self.last = now
        label = self.label if label is None else label
        if self.bar and total:
            filled = int(30 * min(done, total) / total)
            body = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        else:
            rate = done / max(now - self.t0, 1e-9)
            body = f"{done}{f'/{total}' if total else ''} ({rate:.0f}/s)"
        self.write(f"{label}: {body}{' ' + extra if extra else ''}")

    def write(self, line: str) -> None:
        """Draw `line` (in place on a terminal)."""
        if self.quiet:
            return
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()
        self.drawn = True

    def notice(self, text: str) -> None:
        """`label: text` instead of the counts (say, why they stand still), at most
        every interval; callable from any thread."""
        now = time.monotonic()
        if self.quiet or now - self.last < self.interval:
            return
        self.last = now
        self.write(f"{self.label}: {text}")

    def compiled(self, n: int) -> None:
        """`notice` that numba compiled n kernels so far (`warmup.compile_notices`)."""
        self.notice(f"compiling kernels, {n} so far (the first run after an install or "
                    "upgrade; then they load from the cache)")

    def done(self) -> None:
        if self.tty and self.drawn:
            sys.stderr.write("\n")
        self.drawn = False

    def stages(self, stage: str, done: int, total: int | None) -> None:
        """`(stage, done, total)` callbacks (stream.offline.stats): the stage as label."""
        self(done, total, label=stage)


class StatusLine:
    """`peakstream run`'s progress: one line per interval from `ScanRunner.status()` with
    the rates since the last line, lag, queue depths, workers and RSS."""

    def __init__(self, runner: Any, interval: float = 2.0, quiet: bool = False,
                 label: str = "run"):
        self.runner, self.label = runner, label
        self.line = ProgressLine(label, interval=interval, quiet=quiet)
        if self.line.tty:
            self.line.interval = 0.5
        self.last = time.monotonic()
        self.prev: dict[str, Any] = {}

    def __call__(self) -> None:
        now = time.monotonic()
        if self.line.quiet or now - self.last < self.line.interval:
            return
        dt, self.last = now - self.last, now
        status = self.runner.status()
        scan = status.get("scan")
        if scan is None:
            self.prev = {}
            return
        self.line.write(f"{self.label}: {format_status(status, self.prev, dt)}")
        self.prev = dict(scan)

    def done(self) -> None:
        self.line.done()


def format_status(status: dict[str, Any], prev: dict[str, Any], dt: float) -> str:
    """One line: the open scan's points, rates since `prev`, lag, queues, workers, RSS."""
    s = status["scan"]
    of = f"/{s['npoints']}" if s["npoints"] is not None else ""
    same = prev.get("scan_id") == s["scan_id"]

    def rate(key: str) -> float:
        return (s[key] - (prev.get(key, 0) if same else 0)) / max(dt, 1e-9)

    w = status["workers"]
    return (f"scan {s['scan_id']}: {s['linked']}{of} linked, {rate('received'):.0f}/s in, "
            f"{rate('linked'):.0f}/s linked; lag {s['lag']} (max {s['max_lag']}); queues: "
            f"{status['in_flight']}/{status['queue']} out ({w['queued']} waiting for "
            f"{w['workers']} {w['kind']} worker(s)), {s['waiting']} to reorder"
            f"{', receiver held back' if status['blocked'] else ''}; {s['missing']} missing, "
            f"{s['bad']} bad, {s['cliques']} cliques; RSS {status['rss'] / 2**20:.0f} MiB")
