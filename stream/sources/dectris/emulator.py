"""A DECTRIS detector emulator: SIMPLON stream v1 and v2 from numpy frames or files.

It binds a PUSH (as the detector's DCU does; port 0 allowed) and sends
series: the start (v2 CBOR `start`, or the v1 `dheader` with header_detail
none / basic / all), one message per image (raw, lz4 or bslz4; uint8, uint16
or uint32; v2 with one or more channels) and the end. Optionally it plays
the motor controller too: a PUSH that connects to peakstream's motor lane
and sends one point per image (PROTOCOL.md, no frames).

Faults for tests (`send_series(fault=...)`, `--fault`): abort (the end comes
after half the images), no-end, restart (a new start while a series runs),
stray (after an abort: images of the aborted series and broken messages,
then a good series), connect-after-arm (the start is never seen: images
and end without it, then a good series), other-series (images of another
series in between).

    python tools/detector_emulator.py --version 2 --encoding bslz4 --simulate 90
    python tools/detector_emulator.py --version 1 --hdf5 scan.h5::/1.1/measurement/eiger \\
        --omega 0,0.25 --motors-to tcp://127.0.0.1:5600
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import zmq

from stream.core.messages import Point
from stream.sources.dectris.detector_wire import (
    v1_end,
    v1_header,
    v1_image,
    v2_end,
    v2_image,
    v2_start,
)
from stream.sources.dectris.ipchold import hold_ipc_connections, release_when_read
from stream.wire.codec import encode

FAULTS = ("abort", "no-end", "restart", "stray", "connect-after-arm", "other-series")
ENCODINGS = ("raw", "lz4", "bslz4")
FAULT_HELP = """faults (--fault):
  abort              the end comes after half the images
  no-end             the series never gets its end
  restart            a new start while the series runs (the first is aborted)
  stray              after an abort: images of the aborted series and broken
                     messages, then a good series
  connect-after-arm  the start is never seen: images and end without it, then
                     a good series
  other-series       images of another series in between"""
# ------------------------------------------------------------------ the emulator


class DetectorEmulator:
    """A detector's PUSH (bound) and, optionally, a motor controller's PUSH (connected)."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:0", *, version: int = 2,
                 encoding: str = "raw", header_detail: str = "basic",
                 motor_endpoint: str | None = None, context: zmq.Context | None = None,
                 sndhwm: int = 1000):
        if version not in (1, 2) or encoding not in ENCODINGS:
            raise ValueError(f"version 1 or 2 and encoding in {ENCODINGS}, got {version}, "
                             f"{encoding!r}")
        self.version, self.encoding, self.header_detail = version, encoding, header_detail
        ctx = context or zmq.Context.instance()
        self.socket = ctx.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, sndhwm)
        self.socket.setsockopt(zmq.LINGER, -1)  # see close()
        self.motor_socket: zmq.Socket | None = None
        self.context = ctx
        try:
            if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
                host = endpoint.rsplit(":", 1)[0]
                endpoint = f"{host}:{self.socket.bind_to_random_port(host)}"
            else:
                self.socket.bind(endpoint)
            if motor_endpoint:
                self.connect_motors(motor_endpoint)
        except zmq.ZMQError:  # (a socket left open would hold its context's term for good)
            self.close(linger=0)
            raise
        self.endpoint = endpoint

    def connect_motors(self, endpoint: str) -> None:
        """Play the motor controller too: a PUSH connected to peakstream's motor lane."""
        if self.motor_socket is not None:
            raise RuntimeError("the motor lane is connected already")
        self.motor_socket = self.context.socket(zmq.PUSH)
        self.motor_socket.setsockopt(zmq.LINGER, -1)  # see close()
        self.motor_socket.connect(endpoint)

    # one message at a time

    def send(self, parts: bytes | list[bytes]) -> None:
        """Any bytes on the detector's lane (for malformed-input tests)."""
        self.socket.send_multipart([parts] if isinstance(parts, bytes) else list(parts))

    def arm(self, series_id: int, shape: tuple[int, int], dtype: str = "uint16",
            nimages: int | None = None, channels: Iterable[str] = ("threshold_1",),
            unique_id: str | None = None, flatfield: Mapping | None = None,
            pixel_mask: Mapping | None = None, flatfield_enabled: bool = False) -> None:
        """The start of a series (v1 maps: the first channel's) with `start_fields`."""
        extra = dict(getattr(self, "start_fields", {}))
        if self.version == 2:
            self.send(v2_start(series_id, channels=channels, shape=shape, nimages=nimages,
                               unique_id=unique_id, flatfield=flatfield,
                               pixel_mask=pixel_mask, flatfield_enabled=flatfield_enabled,
                               **extra))
            return
        first = next(iter(channels), "")
        self.send(v1_header(series_id, header_detail=self.header_detail, shape=shape,
                            dtype=dtype, nimages=nimages,
                            flatfield=(flatfield or {}).get(first),
                            pixel_mask=(pixel_mask or {}).get(first),
                            flatfield_applied=flatfield_enabled, config=extra))

    def image(self, series_id: int, image_id: int, frames: np.ndarray | Mapping[str, Any],
              unique_id: str | None = None) -> None:
        if not isinstance(frames, Mapping):
            frames = {"threshold_1": frames}
        if self.version == 2:
            self.send(v2_image(series_id, image_id, frames, encoding=self.encoding,
                               unique_id=unique_id))
            return
        if len(frames) != 1:
            raise ValueError("stream v1 carries one channel")
        self.send(v1_image(series_id, image_id, next(iter(frames.values())),
                           encoding=self.encoding))

    def end(self, series_id: int, unique_id: str | None = None) -> None:
        self.send(v2_end(series_id, unique_id) if self.version == 2 else v1_end(series_id))

    def motors(self, scan_id: str, point_id: int, motors: Mapping[str, float],
               counters: Mapping[str, float] | None = None) -> None:
        """One point on the motor lane (needs motor_endpoint)."""
        if self.motor_socket is None:
            raise RuntimeError("no motor lane: give motor_endpoint")
        point = Point(scan_id, point_id, time.time(), dict(motors), dict(counters or {}))
        self.motor_socket.send_multipart(encode(point))

    def stray_parts(self, series_id: int) -> None:
        """Broken messages: parts of an image message on their own, truncated CBOR."""
        if self.version == 1:
            frame = np.zeros((4, 4), np.uint16)
            parts = v1_image(series_id, 0, frame)
            for p in parts[1:]:
                self.send([p])
            self.send(parts[:2])
        else:
            whole = v2_image(series_id, 0, {"threshold_1": np.zeros((4, 4), np.uint16)})
            self.send(whole[: len(whole) // 2])
            self.send([whole, whole])

    # a whole series, with its faults

    def send_series(self, frames: Iterable[Any], *, series_id: int = 1,
                    unique_id: str | None = None, dtype: str | None = None,
                    motors: list[Mapping[str, float]] | None = None,
                    counters: list[Mapping[str, float]] | None = None,
                    motor_scan_id: str | None = None, skip_motors: Iterable[int] = (),
                    fault: str | None = None, nimages: int | None = None,
                    flatfield: Mapping | None = None, pixel_mask: Mapping | None = None,
                    flatfield_enabled: bool = False, rate: float | None = None) -> dict:
        """Send a series (start, images with their motor points, end), with a fault.

        `frames`: 2D arrays, or {channel: array} maps for several channels.
        Returns what was sent: series ids and the image ids of each.
        """
        frames = [f if isinstance(f, Mapping) else {"threshold_1": f} for f in frames]
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r} is not one of {', '.join(FAULTS)}")
        first = next(iter(frames[0].values()))
        n = len(frames) if nimages is None else nimages
        uid = unique_id or f"emu-{series_id}"
        scan = motor_scan_id or (uid if self.version == 2 else f"series-{series_id}")
        half = max(len(frames) // 2, 1)
        sent: dict[str, Any] = {"series": []}
        if fault != "connect-after-arm":
            self.arm(series_id, first.shape, dtype or first.dtype.name, n, list(frames[0]), uid,
                     flatfield, pixel_mask, flatfield_enabled)
        upto = half if fault in ("abort", "restart", "stray") else len(frames)
        skip = set(skip_motors)
        period = 1.0 / rate if rate else 0.0
        for i in range(upto):
            t0 = time.monotonic()
            if self.motor_socket is not None and motors is not None and i not in skip:
                self.motors(scan, i, motors[i], counters[i] if counters else None)
            self.image(series_id, i, frames[i], uid)
            if fault == "other-series" and i % 2 == 0:
                self.image(series_id + 100, i, frames[i], f"emu-{series_id + 100}")
            if period:
                time.sleep(max(period - (time.monotonic() - t0), 0.0))
        sent["series"].append({"series_id": series_id, "images": upto, "fault": fault})
        if fault not in ("no-end", "restart"):
            self.end(series_id, uid)
        if fault == "stray":
            for i in range(half, min(half + 2, len(frames))):
                self.image(series_id, i, frames[i], uid)
            self.stray_parts(series_id)
        if fault in ("restart", "stray", "connect-after-arm"):
            nxt = self.send_series(frames, series_id=series_id + 1, dtype=dtype, motors=motors,
                                   counters=counters, skip_motors=skip, nimages=nimages,
                                   flatfield=flatfield, pixel_mask=pixel_mask,
                                   flatfield_enabled=flatfield_enabled, rate=rate)
            sent["series"] += nxt["series"]
        return sent

    def close(self, linger: float | None = None) -> None:
        """Close both sockets. Messages still queued are kept until the receiver has
        taken them (`linger` None), as a detector does: terminating the context then waits
        for that. A receiver that holds us back (its queues full: flow control) is not a
        reason to drop a series' tail. `linger` s: dropped after that long (tests)."""
        for sock in (self.socket, self.motor_socket):
            if sock is not None:
                sock.close(linger=-1 if linger is None else int(linger * 1000))

    def __enter__(self) -> DetectorEmulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------ command line


def _frames_from_args(args: argparse.Namespace) -> tuple[list, list | None, list | None]:
    """(frames, motor positions, counters) from --simulate or --hdf5; ValueError with a
    one-line reason for input it cannot use (the command line says it, exit 2)."""
    if args.hdf5:
        import h5py
        import hdf5plugin  # noqa: F401  (compressed Eiger / Bliss stacks)

        path, sep, dataset = args.hdf5.rpartition("::")
        if not sep or not path or not dataset:
            raise ValueError(f"--hdf5 {args.hdf5}: give FILE::/dataset (e.g. "
                             f"scan.h5::/1.1/measurement/eiger)")
        motors = None
        if args.omega:
            try:
                start, step = (float(x) for x in args.omega.split(","))
            except ValueError:
                raise ValueError(f"--omega {args.omega}: give START,STEP (e.g. 0,0.25)") from None
        elif args.motors_to:  # no motor point would go out: the scan would fail for it
            raise ValueError("--motors-to with --hdf5 needs --omega START,STEP (the frames' "
                             "positions): without it no motor point is sent")
        try:
            with h5py.File(path, "r") as f:
                stack = f.get(dataset)
                if not isinstance(stack, h5py.Dataset) or stack.ndim != 3:
                    raise ValueError(f"--hdf5: {path} has no 3D dataset {dataset}"
                                     + (f" (it is {stack.shape})"
                                        if isinstance(stack, h5py.Dataset) else ""))
                frames = [stack[i] for i in range(stack.shape[0])]
        except OSError as exc:
            raise ValueError(f"--hdf5: cannot read {path}: {exc}") from None
        if args.omega:
            motors = [{"omega": start + step * i} for i in range(len(frames))]
        return frames, motors, None
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig

    sim = Simulation(SimConfig(npoints=args.simulate, shape=tuple(args.shape), dtype=args.dtype,
                               spots=args.spots))
    frames = [sim.frame(i) for i in range(args.simulate)]
    return (frames, [sim.motors(i) for i in range(args.simulate)],
            [{"monitor": sim.monitor_value(i)} for i in range(args.simulate)])


def as_dtype(frames: list, dtype: str) -> list[np.ndarray]:
    """The frames in `dtype` (unsigned): the same, or widened with their marker pixels
    (the old dtype's largest value: gaps, bad pixels) at the new dtype's largest, so
    they stay markers and do not become counts; ValueError for a narrower or not
    unsigned dtype (counts would wrap)."""
    out, want = [np.asarray(f) for f in frames], np.dtype(dtype)
    have = out[0].dtype if out else want
    if have == want:
        return out
    if have.kind != "u" or have.itemsize > want.itemsize:
        raise ValueError(f"frames of {have.name} cannot be sent as {want.name} (counts "
                         f"would change): give --dtype {have.name}")
    old, new = np.iinfo(have).max, np.iinfo(want).max
    return [np.where(f == old, new, f.astype(want)).astype(want) for f in out]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block: exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python tools/detector_emulator.py",
                description="Emulate a DECTRIS detector's SIMPLON stream (v1 or v2) from\n"
                            "simulated frames or an HDF5 stack, optionally with a motor lane.",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FAULT_HELP)
    p.add_argument("--endpoint", default="tcp://127.0.0.1:0",
                   help="where the detector's PUSH binds (port 0: any; default %(default)s)")
    p.add_argument("--version", type=int, choices=(1, 2), default=2,
                   help="SIMPLON stream version: 2 (CBOR) or 1 (legacy JSON); default "
                        "%(default)s")
    p.add_argument("--encoding", choices=ENCODINGS, default="bslz4",
                   help="the frames' compression (default %(default)s)")
    p.add_argument("--dtype", choices=("uint8", "uint16", "uint32"), default="uint16",
                   help="the frames' dtype; --hdf5 frames of a narrower unsigned dtype are "
                        "widened, their marker (the dtype's largest value: gaps, bad pixels) "
                        "made the new dtype's largest; a wider or signed one is refused")
    p.add_argument("--channels", type=int, default=1, help="v2 only: thresholds (the second "
                   "is the first halved; default %(default)s)")
    p.add_argument("--header-detail", choices=("none", "basic", "all"), default="basic",
                   help="v1 only: the dheader's detail (default %(default)s)")
    p.add_argument("--simulate", type=int, default=30, metavar="N",
                   help="N simulated frames (peakstream's simulator; default %(default)s)")
    p.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("ROWS", "COLS"),
                   help="simulated frames' shape (default 256 256)")
    p.add_argument("--spots", type=int, default=8, help="simulated spots (default %(default)s)")
    p.add_argument("--hdf5", metavar="FILE::/path", help="frames of an HDF5 stack instead")
    p.add_argument("--omega", metavar="START,STEP",
                   help="omega of the --hdf5 frames (needed with --motors-to)")
    p.add_argument("--motors-to", metavar="ENDPOINT",
                   help="send one motor point per image to peakstream's motor lane")
    p.add_argument("--series-id", type=int, default=1,
                   help="the series number (default %(default)s; the scan is emu-N in v2, "
                        "series-N in v1)")
    p.add_argument("--fault", choices=FAULTS, help="a scripted fault (see below)")
    p.add_argument("--rate", type=float, help="images per second (default: as fast as read)")
    p.add_argument("--wait", type=float, default=0.0,
                   help="s to wait after binding, before the first message")
    args = p.parse_args(argv)
    try:
        frames, motors, counters = _frames_from_args(args)
        frames = as_dtype(frames, args.dtype)
    except ValueError as exc:
        p.error(str(exc))
    if args.channels > 1:
        if args.version == 1:
            p.error("stream v1 carries one channel")
        frames = [{f"threshold_{c + 1}": f // (2 ** c) for c in range(args.channels)}
                  for f in frames]
    # a context of its own, terminated at the end: that waits until the receivers have
    # taken what is still queued, such as motor points for a motor lane bound after we
    # started (a daemon still warming up) or the tail of a series a slow receiver holds
    # back; the process's exit would drop them. Over ipc the connections are then held
    # until the receivers have read it all (hold_ipc_connections)
    context = zmq.Context()
    try:
        emu = DetectorEmulator(args.endpoint, version=args.version, encoding=args.encoding,
                               header_detail=args.header_detail,
                               motor_endpoint=args.motors_to, context=context)
    except zmq.ZMQError as exc:  # an endpoint it cannot bind or connect to
        context.term()
        p.error(f"--endpoint {args.endpoint} / --motors-to {args.motors_to or '-'}: {exc}")
    print(f"emulating a DECTRIS detector, stream v{args.version}, on {emu.endpoint}",
          flush=True)
    try:
        time.sleep(args.wait)
        sent = emu.send_series(frames, series_id=args.series_id, motors=motors,
                               counters=counters, fault=args.fault, rate=args.rate)
        for s in sent["series"]:
            print(f"series {s['series_id']}: {s['images']} images"
                  + (f" ({s['fault']})" if s["fault"] else ""), flush=True)
    finally:
        held = hold_ipc_connections()
        emu.close()
        context.term()
        release_when_read(held)
    return 0


if __name__ == "__main__":
    sys.exit(main())
