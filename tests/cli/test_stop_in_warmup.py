"""A ^C during the warm-up of `run` and `demo` (a minute on an empty numba cache) stops
them there, cleanly: `run` warmed up to its end before it looked at the stop (then bound
the data socket and said it listened), and `demo`'s KeyboardInterrupt landed wherever it
was, in a callback the HDF5 library makes into our file object too (a write error)."""

from __future__ import annotations

import signal
import sys

import pytest

from tests.support.daemon import daemon_config
from tests.support.processes import signal_once_said

ONE_KIND = '[source]\nwarmup = ["uint16/raw"]\nlisten = "tcp://127.0.0.1:0"\n'


@pytest.mark.system  # a subprocess compiling its kernels on an empty numba cache
@pytest.mark.parametrize("command, code", [("run", 0), ("demo", 1)])
def test_sigint_during_the_warm_up_stops_there(tmp_path, command, code):
    config, out, tmp = daemon_config(tmp_path, ONE_KIND), tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "stream.cli", command,
           *(["--config"] if command == "demo" else []), str(config), "--output", str(out)]
    returned, text = signal_once_said(cmd, tmp_path / "stderr", "warming up kernels",
                                      signal.SIGINT, {"NUMBA_CACHE_DIR": str(tmp_path / "numba"),
                                                      "TMPDIR": str(tmp)})
    assert returned == code, text
    assert f"peakstream {command}: stopped (SIGINT) during the warm-up" in text, text
    assert "Traceback" not in text and "kernels ready" not in text
    assert "listening on" not in text and "simulated acquisition" not in text
    assert list(tmp.iterdir()) == []  # the warm-up scan's directory is gone
    assert not out.exists() or not list(out.rglob("*.h5"))
