"""Fixtures shared by every test folder (helpers live in tests/support/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import CONFIGS
from tests.support.processes import RunProcess


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
