"""`peakstream simulate --send` says "sent" only for messages a receiver took: it waits
for a receiver that binds late (a daemon warming up), and gives up after --timeout
saying what was not delivered (it used to print "sent" for messages ZeroMQ dropped)."""

from __future__ import annotations

import subprocess
import sys

import zmq

from tests.support.paths import ROOT

SCAN = ["--points", "30", "--shape", "128", "160", "--spots", "2"]


def simulate(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "simulate", *SCAN, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_a_receiver_that_binds_late_gets_every_message(tmp_path):
    endpoint = f"ipc://{tmp_path}/data.sock"
    sender = simulate("--send", endpoint)
    pull = zmq.Context.instance().socket(zmq.PULL)
    try:
        first = sender.stderr.readline()  # written before anything is sent
        assert first.startswith(f"simulate: waiting for the receiver at {endpoint}"), first
        pull.setsockopt(zmq.RCVTIMEO, 120_000)  # a failure, not a hang
        pull.bind(endpoint)
        got = [pull.recv_multipart() for _ in range(32)]  # start, 30 points, end
        out, err = sender.communicate(timeout=120)
    finally:
        sender.kill()
        pull.close(linger=0)
    assert len(got) == 32 and sender.returncode == 0, err
    assert "sent 30 points of scan sim-0001" in out


def test_no_receiver_within_the_timeout_says_nothing_was_delivered(tmp_path):
    sender = simulate("--send", f"ipc://{tmp_path}/nobody.sock", "--timeout", "1")
    try:
        out, err = sender.communicate(timeout=120)
    finally:
        sender.kill()
    assert sender.returncode == 1 and "sent" not in out
    assert "no receiver at ipc://" in err and "none of the 30 points was delivered" in err
