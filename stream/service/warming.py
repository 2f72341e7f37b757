"""The daemon while its kernels load (`stream.run.warmup`, a minute on a cold cache):
its status is refreshed meanwhile (uptime, RSS, the kernels loaded of the total the
last warm-up counted), and SIGTERM or SIGINT stop it there, logged as any stop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

REFRESH = 0.5  # s between status snapshots while warming


class StoppedStarting(BaseException):
    """SIGTERM or SIGINT before the daemon runs: during the warm-up, or while its source
    opens (a BaseException: the warm-up's own error handling lets it through)."""


def stop_while_starting() -> None:
    """SIGTERM and SIGINT raise StoppedStarting (until the daemon installs its own
    handlers, once it runs)."""
    def stop(signum: int, _frame: Any) -> None:
        raise StoppedStarting(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)


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
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        from stream.run.warmup import loaded_kernels

        while not self._done.wait(REFRESH):
            try:
                self.progress = {"kernels": loaded_kernels(), "total": self.total}
                self.update()
            except Exception:  # a status a moment old is no reason to stop the warm-up
                continue
