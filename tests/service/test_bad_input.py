"""Bad input over a real socket: every case counted and reported, the process keeps
running, and the output file opens and says what happened."""

from __future__ import annotations

import re
import time

import h5py
import msgpack
import numpy as np
import pytest
import zmq

from stream.core.messages import DetectorInfo, Start
from stream.sources.simulate import Simulation, send_scan
from stream.sources.simulate.config import SimConfig
from stream.store.reader import load, summary
from stream.wire.codec import encode
from tests.support.paths import CONFIGS

SHAPE = (96, 128)


def short_timeouts_config(tmp_path):
    text = (CONFIGS / "simulated.toml").read_text()
    text = text.replace("point_timeout = 5.0", "point_timeout = 1.0")
    text = text.replace("end_timeout = 30.0", "end_timeout = 2.0")
    limit = SHAPE[0] * SHAPE[1] * 2
    text = text.replace("max_frame_bytes = 67108864", f"max_frame_bytes = {limit}")
    path = tmp_path / "short.toml"
    path.write_text(text)
    return path


def wait_for_status(path, status, limit=120.0):
    """Poll the file's status (readable while the scan runs) until it is `status`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with h5py.File(path, "r", locking=False) as f:
                if f["entry"].attrs["status"] == status:
                    return
        except (OSError, KeyError):
            pass  # not created yet, or being written
        time.sleep(0.2)
    raise AssertionError(f"{path} never reached status {status!r}")


@pytest.mark.system
def test_bad_input_is_counted_reported_and_survived(run_process, tmp_path):
    run = run_process(short_timeouts_config(tmp_path), "--scans", "2")
    sim = Simulation(SimConfig(npoints=20, shape=SHAPE, spots=3, seed=5))
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(run.endpoint)

    def point(i, scan_id="bad-1"):
        return encode(sim.point(i, scan_id))

    push.send(b"\x93garbage")  # not msgpack
    push.send_multipart(point(0, "early"))  # a point before any start
    for sid in ("../x", "/etc/x"):  # scan_ids that would escape the output directory
        push.send_multipart(encode(Start(sid, {"eiger": DetectorInfo(SHAPE, "uint16")})))
    push.send_multipart(encode(sim.start("bad-1")))
    for i in range(5):
        push.send_multipart(point(i))
    header, frame = point(5)
    push.send_multipart([header, bytes(frame)[:-2]])  # wrong buffer size
    h = msgpack.unpackb(point(6)[0])
    h["frames"]["eiger"]["encoding"] = "zstd"
    push.send_multipart([msgpack.packb(h), bytes(point(6)[1])])  # unknown encoding
    push.send_multipart(point(7, "someone-else"))  # another scan's point
    push.send_multipart(point(3))  # a duplicate
    big = sim.point(8, "bad-1")
    big.frames["eiger"] = np.zeros((SHAPE[0] * 2, SHAPE[1]), np.uint16)
    push.send_multipart(encode(big))  # bigger than max_frame_bytes
    for i in range(9, 15):
        push.send_multipart(point(i))
    # 15..19 never come and no end: the scan must time out by itself, not hang
    wait_for_status(tmp_path / "out" / "bad-1.h5", "abort")
    send_scan(Simulation(SimConfig(npoints=20, shape=SHAPE, spots=3, seed=6)), run.endpoint,
              "good-2")
    rc, out, err = run.wait()
    push.close(linger=0)
    assert rc == 1, "a scan was aborted: exit code 1"

    out_dir = tmp_path / "out"
    assert sorted(p.name for p in out_dir.iterdir()) == ["bad-1.h5", "good-2.h5"]
    assert not (tmp_path / "x.h5").exists()

    s = summary(out_dir / "bad-1.h5")
    assert s["status"] == "abort" and "timeout" in s["reason"]
    assert (s["points"], s["points_ok"], s["points_missing"]) == (20, 11, 9)
    assert s["events"]["malformed"] == 3
    assert s["events"]["rejected"] == 1
    assert s["events"]["duplicate"] == 1
    assert s["events"]["missing"] == 9
    assert s["counters"]["missing"] == 9 and s["counters"]["duplicate"] == 1
    t = load(out_dir / "bad-1.h5")
    ok = t["points"]["status"] == 0
    assert t["points"]["point_id"][ok].tolist() == [0, 1, 2, 3, 4, *range(9, 15)]
    messages = " ".join(t["events"]["message"])
    for reason in ("buffer has", "unknown encoding 'zstd'", "more than the configured maximum",
                   "'someone-else'", "already received"):
        assert reason in messages, reason

    assert summary(out_dir / "good-2.h5")["status"] == "success"
    session = re.search(r"session: 2 scan\(s\), (\d+) messages, (\d+) rejected, "
                        r"(\d+) duplicate, (\d+) malformed", out)
    assert session, out
    assert [int(x) for x in session.groups()[1:]] == [8, 1, 4]
    for reason in ("not msgpack", "no scan is open", "not a safe file name"):
        assert reason in err, reason
