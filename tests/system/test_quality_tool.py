"""tools/quality.py (Q1, quoted by docs/nodes.md) runs to its table: its default row gave
relink the whole [linker] defaults, and relink refuses a distance the default criterion
does not use, so the tool stopped with a ValueError before printing anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.system


def test_quality_prints_every_row_with_the_default_last():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "quality.py"), "--seeds", "0",
                          "--points", "40", "--spots", "40", "--shape", "256", "256",
                          "--touching", "0.2"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if " | " in line and "%" in line]
    assert len(rows) == 12 and rows[-1].endswith("(default)"), out.stdout
