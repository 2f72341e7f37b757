"""Fixtures every test folder may use (registered by `pytest_plugins` in tests/conftest.py):
real subprocesses that are killed at the end of the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.paths import CONFIGS
from tests.support.processes import RunProcess


@pytest.fixture
def run_process(tmp_path):
    """Start `peakstream run` (config, *args) writing to tmp_path/out."""
    procs: list[RunProcess] = []

    def start(config: Path = CONFIGS / "simulated.toml", *args: str) -> RunProcess:
        p = RunProcess(config, tmp_path / "out", *args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.communicate()


@pytest.fixture
def daemon(tmp_path):
    """Start daemons (config, *args); every one is killed at the end of the test."""
    procs: list[DaemonProcess] = []

    def start(config: Path, *args: str, output: Path | None = None,
              live: bool = True, fsize: int = 0) -> DaemonProcess:
        p = DaemonProcess(config, output or tmp_path / "out", *args, live=live, fsize=fsize)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
