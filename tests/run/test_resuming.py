"""Which crashed file a point of a scan not open continues, and what is said when none."""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from collections import Counter

import pytest

from stream.core.item import PEAK_COLUMNS, clique_columns
from stream.core.messages import Point
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.scanfile import ScanStore
from stream.wire.codec import encode
from tests.support.resume import SWEEP, config


def test_a_moved_crashed_file_of_the_same_config_is_not_called_another_config(tmp_path):
    """A crashed file renamed (a copy, a move: never resumed into) is no edited config:
    the point is refused as of no open scan, without a claim about the config."""
    cfg = config(0.0)
    store = ScanStore(tmp_path / "sweep.h5", scan_id="sweep", detector="d",
                      motors=["omega"], counters=[], peak_columns=PEAK_COLUMNS,
                      clique_columns=clique_columns(["omega"]), config_text=cfg.text())
    store.checkpoint({}, None)
    store.close_unchanged()  # as a crash leaves it: status running
    os.rename(tmp_path / "sweep.h5", tmp_path / "sweep-moved.h5")
    runner = ScanRunner(cfg, output_dir=tmp_path)
    runner.handle(encode(Point("sweep", 5, 0.0, {"omega": 1.0})))
    status = runner.status()
    runner.close()
    assert status["rejected"] == 1 and status["last_error"] == ""


class Opens:
    """The files opened in a directory, as the kernel reports them (inotify IN_OPEN)."""

    IN_OPEN, IN_NONBLOCK = 0x20, 0o4000

    def __init__(self, directory):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0
        assert self.libc.inotify_add_watch(self.fd, str(directory).encode(), self.IN_OPEN) >= 0

    def read(self) -> Counter:
        """{name: opens} since the last read."""
        out: Counter = Counter()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            pos = 0
            while pos < len(data):
                _, _, _, size = struct.unpack_from("iIII", data, pos)
                out[data[pos + 16:pos + 16 + size].rstrip(b"\0").decode()] += 1
                pos += 16 + size

    def close(self) -> None:
        os.close(self.fd)


def crashed_files(directory, cfg, count: int) -> list[str]:
    """`count` files of scan "sweep" as crashes leave them (status running), each moved
    aside so that the next one is written at the scan's name (never resumed: copies)."""
    names = []
    for i in range(count):
        store = ScanStore(directory / "sweep.h5", scan_id="sweep", detector="d",
                          motors=["omega"], counters=[], peak_columns=PEAK_COLUMNS,
                          clique_columns=clique_columns(["omega"]), config_text=cfg.text())
        store.checkpoint({}, None)
        store.close_unchanged()
        names.append(f"sweep-{i}.h5")
        os.rename(directory / "sweep.h5", directory / names[-1])
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_a_start_and_a_stray_point_read_each_file_of_their_scan_once(tmp_path, caplog):
    """What the resume side decides of a scan's files (the one to continue, another
    config's, the earlier files warned about) comes of one read of each."""
    cfg = config(0.0)
    names = crashed_files(tmp_path, cfg, 3)
    sim = Simulation(SWEEP)
    opens = Opens(tmp_path)
    try:
        runner = ScanRunner(cfg, output_dir=tmp_path)
        runner.handle(encode(Point("sweep", 5, 0.0, {"omega": 1.0})))  # no file to continue
        stray = opens.read()
        runner.handle(encode(sim.start("sweep")))  # a new file, the earlier ones warned of
        started = opens.read()
        runner.close()
    finally:
        opens.close()
    assert {n: stray[n] for n in names} == dict.fromkeys(names, 1), stray
    assert {n: started[n] for n in names} == dict.fromkeys(names, 1), started
    assert all(f"an earlier file of this scan, {tmp_path / n}" in caplog.text for n in names)
