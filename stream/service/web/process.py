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

RESTARTS = 3  # restarts of a web view that exits before the daemon gives up on it


class WebProcess:
    """`python -m stream.cli web` fed by the daemon's live lane (and control socket);
    `watch()` restarts it when it has exited (at most RESTARTS times)."""

    def __init__(self, live: str, port: int, address: str = "127.0.0.1",
                 control: str = "", allow_control: bool = False):
        if port == 0:  # chosen here, so that status can say it and a restart keeps it
            from stream.service.web.server import free_port

            port = free_port(address)
        from stream.service.web.server import WILDCARD

        host = __import__("socket").gethostname() if address in WILDCARD else address
        self.url = f"http://{host}:{port}/"
        self.restarts, self.state = 0, "running"
        cmd = [sys.executable, "-m", "stream.cli", "web", "--live", live, "--port", str(port),
               "--address", address]
        if allow_control and control:
            cmd += ["--control", control, "--allow-control"]
        root = str(Path(__file__).resolve().parents[3])  # where `stream` is importable
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        self.cmd, self.env = cmd, env
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        log.info("web view: started pid %d (%s)", self.proc.pid, " ".join(self.cmd[1:]))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def watch(self) -> None:
        """If the web view has exited: log it and start it again, RESTARTS times at most
        (a busy port, a crash, a kill); then say it is given up."""
        code = self.proc.poll()
        if code is None or self.state != "running":
            return
        if self.restarts >= RESTARTS:
            self.state = f"stopped (exit code {code}, after {self.restarts} restarts)"
            log.error("web view: pid %d exited with code %d; not restarted again (%d "
                      "restarts); the daemon goes on without it", self.proc.pid, code,
                      self.restarts)
            return
        self.restarts += 1
        log.warning("web view: pid %d exited with code %d; restarting it (%d/%d)",
                    self.proc.pid, code, self.restarts, RESTARTS)
        self._start()

    def status(self) -> dict[str, object]:
        """For the daemon's status: the page's address, running or not, restarts."""
        return {"url": self.url, "state": self.state if self.state != "running" or
                self.alive() else "restarting", "pid": self.proc.pid,
                "restarts": self.restarts}

    def close(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` s."""
        self.state = "closed"
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
