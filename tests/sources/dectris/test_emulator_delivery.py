"""The emulator delivers a whole series to a receiver that holds it back (flow control):
closing it and terminating its context wait until the receiver has taken the tail (the
last image and the end), as a detector does; it used to drop them after 10 s."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zmq

from stream.sources.dectris.common import SeriesEnd, SeriesImage
from stream.sources.dectris.emulator import DetectorEmulator
from stream.sources.dectris.v2 import decode_v2

# more than the loopback socket buffers and the receiver's queue hold: most of the
# series waits in the emulator's queue while the receiver does not read
SHAPE, IMAGES = (512, 512), 40
HOLD = 12.0  # s the receiver holds back: longer than the 10 s the emulator used to wait


@pytest.mark.system
def test_the_tail_of_a_series_reaches_a_receiver_that_held_it_back():
    context = zmq.Context()
    emu = DetectorEmulator("tcp://127.0.0.1:0", version=2, encoding="raw", context=context)
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 1)
    pull.setsockopt(zmq.RCVBUF, 1 << 16)
    pull.connect(emu.endpoint)
    frame = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint16).reshape(SHAPE)
    closed = threading.Event()

    def acquire():
        emu.arm(1, SHAPE, "uint16", IMAGES)
        for i in range(IMAGES):
            emu.image(1, i, frame)
        emu.end(1)
        emu.close()
        closed.set()
        context.term()  # returns once the receiver has taken everything

    sender = threading.Thread(target=acquire, daemon=True)
    sender.start()
    assert closed.wait(60)
    sender.join(HOLD)  # the receiver holds back (the sender used to give up meanwhile)
    images, ended = [], False
    try:
        while not ended and (sender.is_alive() or pull.poll(1000)):
            if not pull.poll(1000):
                continue
            msg = decode_v2(pull.recv_multipart())
            if isinstance(msg, SeriesImage):
                images.append(msg.image_id)
            ended = isinstance(msg, SeriesEnd)
    finally:
        pull.close(linger=0)
    sender.join(60)
    assert images == list(range(IMAGES)) and ended, (len(images), ended)
    assert not sender.is_alive()  # the context terminated once all was taken


@pytest.mark.system
def test_the_emulator_cli_waits_until_a_stalled_ipc_receiver_has_read_everything(tmp_path):
    """`--fault stray` over ipc to the daemon's source, which stops reading after the
    first message (its runner has no room): the emulator used to exit once its messages
    were in the kernel's socket queue, and libzmq's PULL, stalled at its high-water mark,
    took the hang-up for an error and never read that queue: the last 2 images and the
    end of series 2 were lost (65 of 68 messages)."""
    import subprocess
    import sys

    from stream.core.messages import End
    from stream.sources.dectris.source import DectrisSource
    from stream.wire.codec import decode
    from tests.support.paths import ROOT

    endpoint = f"ipc://{tmp_path}/detector.sock"
    src = DectrisSource(endpoint=endpoint, version=2, series_timeout=60.0, rcvhwm=64)
    proc = subprocess.Popen([sys.executable, "tools/detector_emulator.py", "--endpoint",
                             endpoint, "--fault", "stray", "--simulate", "40", "--shape",
                             "128", "160", "--spots", "12"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    msgs: list = []
    try:
        while not src.counters["messages"]:
            msgs += src.receive(1.0)
        try:  # the runner has no room: no reading while the emulator finishes
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            pass  # it waits for us, as a detector does
        while proc.poll() is None or src.poller.poll(1000):
            msgs += src.receive(0.2)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        src.close()
    ends = [m for m in map(decode, msgs) if isinstance(m, End)]
    assert src.counters["messages"] == 68, src.status()
    assert [e.scan_id for e in ends] == ["emu-1", "emu-2"] and ends[1].status == "success", ends
