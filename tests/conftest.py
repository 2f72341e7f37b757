"""Shared fixtures live in tests/support/fixtures.py, helpers in tests/support/.

A test that starts a daemon or `peakstream run` subprocess, or lives in tests/system/,
must be marked `system` (the slow ones, skipped by `-m "not system"`): collection
fails naming any that is not, so the quick run stays quick."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

SLOW_FIXTURES = {"daemon", "run_process"}
SYSTEM_DIR = Path(__file__).parent / "system"


def pytest_collection_modifyitems(config, items) -> None:
    unmarked = [item.nodeid for item in items
                if item.get_closest_marker("system") is None
                and (SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                     or SYSTEM_DIR in Path(item.fspath).parents)]
    if unmarked:
        raise pytest.UsageError("mark these @pytest.mark.system (they start daemons or "
                                "`peakstream run`, or live in tests/system/): "
                                + ", ".join(unmarked))
