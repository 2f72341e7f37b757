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
