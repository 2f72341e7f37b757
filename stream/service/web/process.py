"""The daemon's web view: `peakstream web` as a child process (`[web] port`), so the
page's work never takes the processor's time or GIL. Its stderr is the daemon's, where
it says on which address the page is."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class WebProcess:
    """`python -m stream.cli web` fed by the daemon's live lane (and control socket)."""

    def __init__(self, live: str, port: int, address: str = "127.0.0.1",
                 control: str = "", allow_control: bool = False):
        cmd = [sys.executable, "-m", "stream.cli", "web", "--live", live, "--port", str(port),
               "--address", address]
        if allow_control and control:
            cmd += ["--control", control, "--allow-control"]
        root = str(Path(__file__).resolve().parents[3])  # where `stream` is importable
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        log.info("web view: started pid %d (%s)", self.proc.pid, " ".join(cmd[1:]))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("web view: pid %d did not stop; killed", self.proc.pid)
                self.proc.kill()
                self.proc.wait()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the daemon dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
