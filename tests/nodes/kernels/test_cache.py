"""The kernels' numba cache follows every kernel file: numba keys a cached kernel on
its own file only, so a kernel calling one in another file kept running the old callee
after an update that changed only the callee's file. Shown on a small package of two
kernel files, compiled in one process and run again in a fresh one after the callee's
file changed, with and without `cache_directory`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba

from nodes.kernels import cache_directory
from tests.support.paths import ROOT

SALTED = """import os
from pathlib import Path
import numba
from nodes.kernels import cache_directory
numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"] = cache_directory(
    Path(__file__).parent, os.environ.get("NUMBA_CACHE_DIR"))
"""
CALLEE = "import numba\n\n@numba.njit(cache=True)\ndef f(x):\n    return x + {}\n"
CALLER = ("import numba\nfrom {pkg}.callee import f\n\n@numba.njit(cache=True)\n"
          "def g(x):\n    return 2 * f(x)\n")


def run_g(tmp: Path, pkg: str, cache: Path) -> int:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", f"from {pkg}.caller import g; print(g(1))"],
                         env=env, capture_output=True, text=True, check=True, cwd=tmp)
    return int(out.stdout)


def results_after_the_callee_changes(tmp: Path, pkg: str, salted: bool) -> tuple[int, int]:
    folder = tmp / pkg
    folder.mkdir()
    (folder / "__init__.py").write_text(SALTED if salted else "")
    (folder / "callee.py").write_text(CALLEE.format(1))
    (folder / "caller.py").write_text(CALLER.format(pkg=pkg))
    before = run_g(tmp, pkg, tmp / f"cache_{pkg}")  # compiled and cached: 2 * (1 + 1)
    (folder / "callee.py").write_text(CALLEE.format(2))  # an update of the callee only
    return before, run_g(tmp, pkg, tmp / f"cache_{pkg}")  # 2 * (1 + 2) if not stale


def test_a_changed_callee_file_is_compiled_again(tmp_path):
    assert results_after_the_callee_changes(tmp_path, "salted", True) == (4, 6)
    # numba's own keying, for comparison: the caller's cached code still has the old callee
    assert results_after_the_callee_changes(tmp_path, "plain", False) == (4, 4)


def test_the_directory_follows_the_files_and_the_users_base(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    first = cache_directory(tmp_path, str(tmp_path / "base"))
    assert Path(first).parent == tmp_path / "base"
    assert cache_directory(tmp_path, first) == first  # a child process keeps it
    (tmp_path / "a.py").write_text("x = 2\n")
    assert cache_directory(tmp_path, str(tmp_path / "base")) != first
    # the kernels themselves: their directory is numba's, in the environment too
    assert numba.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
    assert Path(numba.config.CACHE_DIR).name.startswith("numba-")
