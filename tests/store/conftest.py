"""The recorded scans the resume and disk-fault tests kill and resume (one per module)."""

import pytest

from tests.support.resume import SNAKE, SWEEP, recording


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return recording(tmp_path_factory, SWEEP, "sweep")


@pytest.fixture(scope="module")
def snake(tmp_path_factory):
    return recording(tmp_path_factory, SNAKE, "snake")
