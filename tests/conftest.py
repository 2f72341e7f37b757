"""Shared helpers: start `peakstream run` as a real subprocess on an ephemeral port."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


class RunProcess:
    """`peakstream run` in a subprocess; `endpoint` is where it listens."""

    def __init__(self, config: Path, output: Path, *args: str):
        cmd = [sys.executable, "-m", "stream.cli", "run", str(config), "--listen",
               "tcp://127.0.0.1:0", "--output", str(output), "--progress-interval", "0.5", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        first = self.proc.stderr.readline()
        m = re.search(r"listening on (tcp://\S+),", first)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"peakstream run did not start: {first}{self.proc.stderr.read()}")
        self.endpoint = m.group(1)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"peakstream run did not exit:\n{out}\n{err}") from None
        return self.proc.returncode, out, err


@pytest.fixture
def run_process(tmp_path):
    procs = []

    def start(config: Path = CONFIGS / "simulated.toml", *args: str) -> RunProcess:
        p = RunProcess(config, tmp_path / "out", *args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.communicate()


def simulate_send(endpoint: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`peakstream simulate --send` as a separate sender process."""
    cmd = [sys.executable, "-m", "stream.cli", "simulate", "--quiet", "--send", endpoint, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
