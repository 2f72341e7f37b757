"""`peakstream run` and `peakstream simulate --send` as real subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.support.paths import ROOT


class RunProcess:
    """`peakstream run` in a subprocess; `endpoint` is where it listens."""

    def __init__(self, config: Path, output: Path, *args: str):
        cmd = [sys.executable, "-m", "stream.cli", "run", str(config), "--listen",
               "tcp://127.0.0.1:0", "--output", str(output), "--progress-interval", "0.5", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        # the warm-up's progress lines come first; the data socket is bound after them
        self.startup: list[str] = []
        m = None
        while m is None:
            line = self.proc.stderr.readline()
            if not line:  # it exited before binding
                self.proc.kill()
                raise RuntimeError("peakstream run did not start: "
                                   f"{''.join(self.startup)}{self.proc.stderr.read()}")
            self.startup.append(line)
            m = re.search(r"listening on (tcp://\S+),", line)
        self.endpoint = m.group(1)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"peakstream run did not exit:\n{out}\n{err}") from None
        return self.proc.returncode, out, err


def simulate_send(endpoint: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`peakstream simulate --send` as a separate sender process."""
    cmd = [sys.executable, "-m", "stream.cli", "simulate", "--quiet", "--send", endpoint, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def signal_once_said(cmd: list[str], log: Path, said: str, signum: int, env: dict[str, str],
                     timeout: float = 300) -> tuple[int, str]:
    """Run `cmd` (a peakstream command line, stderr to `log`), send it `signum` once its
    stderr says `said`: its exit code and stderr."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                env={**os.environ, **env})
        try:
            for _ in range(6000):  # a safety net; the assert below says what came
                if said in log.read_text() or proc.poll() is not None:
                    break
                time.sleep(0.05)
            assert said in log.read_text(), log.read_text()
            proc.send_signal(signum)
            return proc.wait(timeout), log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
