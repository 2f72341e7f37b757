"""The daemon while its kernels load (`stream.run.warmup`, a minute on a cold cache):
its status is refreshed meanwhile (uptime, RSS, the kernels loaded of the total the
last warm-up counted), and SIGTERM or SIGINT stop it there, logged as any stop.

A signal during the warm-up is held until the warm-up's next message (`check_stop`):
raised wherever the handler happened to run, it could land in a callback the HDF5
library makes into our file object, which turns it into a write error (the warm-up
scan failed and the stop was lost: the daemon ran on)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

REFRESH = 0.5  # s between status snapshots while warming


class StoppedStarting(BaseException):
    """SIGTERM or SIGINT before the daemon runs: during the warm-up, or while its source
    opens (a BaseException: the warm-up's own error handling lets it through)."""


_held: dict[str, Any] = {"holding": False, "signal": ""}  # during the warm-up


def stop_while_starting() -> None:
    """SIGTERM and SIGINT raise StoppedStarting (until the daemon installs its own
    handlers, once it runs); during the warm-up, at its next `check_stop`."""
    def stop(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if _held["holding"]:
            _held["signal"] = _held["signal"] or name
            return
        raise StoppedStarting(name)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)


def check_stop() -> None:
    """StoppedStarting if a stop signal came during the warm-up (the warm-up calls this
    between its messages, where nothing is half done)."""
    if _held["signal"]:
        raise StoppedStarting(_held["signal"])


class WarmingStatus:
    """While the `with` block runs, `update()` every REFRESH s from a thread of its own,
    with `progress` set to the kernels loaded and the expected total (None: unknown, the
    first warm-up of this config)."""

    def __init__(self, config: Any, update: Callable[[], None]):
        from stream.run.warmup import expected_kernels

        self.update, self.total = update, expected_kernels(config)
        self.progress: dict[str, Any] = {"kernels": 0, "total": self.total}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warming-status", daemon=True)

    def __enter__(self) -> WarmingStatus:
        _held.update(holding=True, signal="")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        _held["holding"] = False
        self._done.set()
        self._thread.join()
        if exc[0] is None:
            check_stop()  # a signal after the warm-up's last message


    def _run(self) -> None:
        from stream.run.warmup import loaded_kernels

        while not self._done.wait(REFRESH):
            try:
                self.progress = {"kernels": loaded_kernels(), "total": self.total}
                self.update()
            except Exception:  # a status a moment old is no reason to stop the warm-up
                continue
