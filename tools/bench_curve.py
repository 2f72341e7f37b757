"""What CurveZMQ costs a remote worker: the CPU to receive one frame, with and without.

A remote worker (docs/cluster.md) gets each frame over TCP, encrypted with
CurveZMQ (required on anything but loopback). Here a PUSH socket sends frame-
sized messages to a PULL socket over tcp loopback, each in a ZeroMQ context of
its own, plain and with CurveZMQ, interleaved; printed: the CPU per message of
the receiving context's I/O thread (where ZeroMQ reads and decrypts) and of
the sender's, from /proc, min / median / max over the repeats. Compare the
receive with a local worker thread's whole chain per frame
(`tools/bench_remote.py`): TARGETS P8 allows a remote worker 1.1x of it.

    python tools/bench_curve.py                      # EIGER2 4M bslz4 frames (~2.66 MB)
    python tools/bench_curve.py --bytes 500000 --messages 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchinfo import cpu_model  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def tids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def thread_name(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


def cpu_s(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def io_thread(ctx: zmq.Context, kind: int) -> tuple[zmq.Socket, int]:
    """A socket of `ctx` and the I/O thread the context started for it."""
    before = tids()
    sock = ctx.socket(kind)
    time.sleep(0.05)
    new = [t for t in sorted(tids() - before) if thread_name(t).startswith("ZMQbg/IO")]
    if len(new) != 1:
        raise RuntimeError(f"expected one new ZeroMQ I/O thread, saw {len(new)}")
    return sock, new[0]


def one_run(curve: bool, payload: bytes, messages: int) -> tuple[float, float, float]:
    """(receiver I/O ms, sender I/O ms, wall ms) per message."""
    rctx, sctx = zmq.Context(io_threads=1), zmq.Context(io_threads=1)
    try:
        pull, rtid = io_thread(rctx, zmq.PULL)
        push, stid = io_thread(sctx, zmq.PUSH)
        if curve:
            spub, ssec = zmq.curve_keypair()
            cpub, csec = zmq.curve_keypair()
            pull.curve_server, pull.curve_secretkey, pull.curve_publickey = True, ssec, spub
            push.curve_serverkey, push.curve_publickey, push.curve_secretkey = spub, cpub, csec
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(payload)
        pull.recv(copy=False)  # connected (and the handshake done)
        r0, s0, t0 = cpu_s(rtid), cpu_s(stid), time.perf_counter()
        sender = threading.Thread(target=lambda: [push.send(payload, copy=False)
                                                  for _ in range(messages)])
        sender.start()
        for _ in range(messages):
            pull.recv(copy=False)
        sender.join()
        wall = time.perf_counter() - t0
        r1, s1 = cpu_s(rtid), cpu_s(stid)
        pull.close(0)
        push.close(0)
        return (1e3 * (r1 - r0) / messages, 1e3 * (s1 - s0) / messages,
                1e3 * wall / messages)
    finally:
        rctx.term()
        sctx.term()


def fmt(values: list[float]) -> str:
    return f"{min(values):6.2f} {statistics.median(values):6.2f} {max(values):6.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bytes", type=int, default=2_660_000,
                   help="message size (default 2660000: an EIGER2 4M bslz4 frame)")
    p.add_argument("--messages", type=int, default=300, help="messages per run (default 300)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each kind (default 5)")
    args = p.parse_args()
    payload = np.random.default_rng(0).integers(0, 256, args.bytes, np.uint8).tobytes()
    print(f"machine  {os.cpu_count()} cores, {cpu_model()}, Python "
          f"{platform.python_version()}, pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}")
    print(f"messages {args.messages} x {args.bytes:,} bytes over tcp loopback, PUSH -> PULL, "
          f"one context each; {args.repeats} repeats, plain and CurveZMQ interleaved; load "
          f"average {os.getloadavg()[0]:.1f}")
    got: dict[str, list[tuple[float, float, float]]] = {"plain": [], "curve": []}
    for _ in range(args.repeats):
        for kind in got:
            got[kind].append(one_run(kind == "curve", payload, args.messages))
    print(f"{'ms per message (min median max)':34}{'receiver I/O':>22}{'sender I/O':>22}"
          f"{'wall':>22}")
    for kind, runs in got.items():
        cols = [fmt([r[i] for r in runs]) for i in range(3)]
        print(f"{kind:34}{cols[0]:>22}{cols[1]:>22}{cols[2]:>22}")
    extra = (statistics.median(r[0] for r in got["curve"])
             - statistics.median(r[0] for r in got["plain"]))
    print(f"CurveZMQ adds {extra:.2f} ms of the receiver's CPU per message "
          f"({args.bytes / max(extra, 1e-9) / 1e6:.2f} GB/s decrypted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
