"""A command that compiles numba kernels (the first run after an install or upgrade)
says so on its progress line instead of standing still at 0 points."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import pytest

from stream.cli.progress import ProgressLine
from stream.run.warmup import compile_notices
from tests.support.paths import ROOT


def test_every_compile_reaches_the_progress_line(capsys):
    line = ProgressLine("replay x", 10)
    line.interval = 0.0  # every notice drawn

    @numba.njit  # a new function: compiled here, whatever the cache holds
    def twice(x):
        return 2 * x

    seen: list[int] = []
    with compile_notices(lambda n: (seen.append(n), line.compiled(n))):
        assert twice(3) == 6 and twice(1.5) == 3.0  # two signatures: two compiles
    assert twice(2) == 4  # outside: not counted
    assert seen == [1, 2]
    err = capsys.readouterr().err
    assert "replay x: compiling kernels, 2 so far" in err


def test_the_last_line_is_drawn_once(capsys):
    """A replay reports its end from the receive loop and again when it finishes: the
    final line appears once (it came three times), a new count again."""
    line = ProgressLine("replay x", 10)
    line(10)
    line(10)
    line(10, force=True)
    line(12, force=True)
    lines = capsys.readouterr().err.splitlines()  # (the rate is the clock's: not compared)
    assert [x.split(" (")[0] for x in lines] == ["replay x: 10/10", "replay x: 12/10"]


@pytest.mark.system
def test_a_cold_replay_says_it_compiles(tmp_path):
    """With an empty numba cache the replay's line names the compiling; then it runs
    from the cache and says nothing of it. relink, which has no other line, too."""
    rec = tmp_path / "sim.h5"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def peakstream(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)

    assert peakstream("simulate", "--points", "20", "--output", str(rec),
                      "--quiet").returncode == 0
    cold = peakstream("replay", str(rec), "--output", str(tmp_path / "a.h5"))
    assert cold.returncode == 0, cold.stderr
    assert "compiling kernels" in cold.stderr
    warm = peakstream("replay", str(rec), "--output", str(tmp_path / "b.h5"))
    assert warm.returncode == 0 and "compiling kernels" not in warm.stderr
    # relink with a split whose kernels the replay did not need: compiled, and said
    split = peakstream("relink", str(tmp_path / "a.h5"), "--split", "pixels", "--output",
                       str(tmp_path / "c.h5"))
    assert split.returncode == 0, split.stderr
    assert "relink: compiling kernels" in split.stderr


@pytest.mark.system
def test_a_cold_diffmap_says_it_compiles(tmp_path):
    """diffmap's first run after an install compiled its kernels with no line (14
    frames/s and silence); it says so now, as replay does, and not once they are cached."""
    from tests.support.diffmap import scan_files

    scan_files(tmp_path, 4)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def diffmap(out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stream.cli.diffmap", "-p",
                               str(tmp_path / "geo.poni"), "-o", str(tmp_path / out), "-t",
                               "2", "-c", "80", "--no-gui", str(tmp_path / "scan_*.edf")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)

    cold = diffmap("a.h5")
    assert cold.returncode == 0, cold.stderr
    assert "diffmap: compiling kernels" in cold.stderr
    warm = diffmap("b.h5")
    assert warm.returncode == 0 and "compiling kernels" not in warm.stderr
