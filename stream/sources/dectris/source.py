"""DectrisSource: the sockets, and our protocol's messages out of a DECTRIS detector.

A PULL connects to the detector's PUSH (stream v1 on port 9999, v2 on
31001); a second PULL binds our motor lane (`listen`, PROTOCOL.md point
messages without frames). `receive(timeout)` reads what has come, runs the
series state machine (`series.SeriesMachine`) and its timeouts, and returns
our messages already encoded (`stream.message.encode`), ready for
`ScanRunner.handle`. A detector message that cannot be decoded is counted
(`malformed`), logged with the reason and dropped; so is a bad motor message.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import zmq

from stream.core.messages import Message, MessageError, Point, Start
from stream.core.trajectory import make_trajectory
from stream.sources.dectris.common import DetectorError
from stream.sources.dectris.series import SeriesMachine
from stream.sources.dectris.v1 import decode_v1
from stream.sources.dectris.v2 import decode_v2
from stream.wire.codec import decode, encode
from stream.wire.sockets import bind

log = logging.getLogger(__name__)

DRAIN = 16  # messages read per receive() call at most (the caller keeps its pace)
DECODERS = {1: decode_v1, 2: decode_v2}
SOURCE_KEYS = {"kind", "detector_endpoint", "stream_version", "listen", "motors", "counters",
               "join_timeout", "series_timeout", "rcvhwm", "trajectory"}


class DectrisSource:
    """A DECTRIS detector (SIMPLON stream v1 or v2) plus our motor lane, as our messages.

    `motors` / `counters` None: the names of the first point's motors and counters;
    `trajectory` None: a sweep in the first motor. A `stream.sources.base.Source`.
    """

    done = False  # series after series: no last message

    def __init__(self, *, endpoint: str, version: int = 2, listen: str = "",
                 motors: list[str] | None = None, counters: list[str] | None = None,
                 trajectory: dict | None = None, join_timeout: float = 2.0,
                 series_timeout: float = 30.0, rcvhwm: int = 64,
                 context: zmq.Context | None = None):
        if version not in DECODERS:
            raise ValueError(f"dectris source: stream version must be 1 or 2, got {version!r}")
        if join_timeout < 0 or series_timeout <= 0:
            raise ValueError("dectris source: join_timeout must be >= 0 and series_timeout > 0")
        for what, names in (("motors", motors), ("counters", counters)):
            if names is not None and not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"dectris source: {what} must be a list of names")
        if trajectory is not None:
            try:  # unknown keys, wrong types: a config error now, not a rejected scan later
                make_trajectory(dict(trajectory), 2, None if motors is None else motors)
            except ValueError as exc:
                raise ValueError(f"dectris source: trajectory: {exc}") from None
        self.version, self.endpoint = version, endpoint
        self._decode = DECODERS[version]
        self.machine = SeriesMachine(motors=motors, counters=counters, trajectory=trajectory,
                                     join_timeout=join_timeout, series_timeout=series_timeout,
                                     motor_lane=bool(listen))
        self.counters: Counter = Counter(messages=0, malformed=0, motor_messages=0,
                                         motor_malformed=0, motor_ignored=0, bad_start=0)
        self.last_error = ""
        self.refusals: dict[tuple, str] = {}  # (series id, scan_id) -> why the runner refused it
        self.context = context or zmq.Context.instance()
        self.detector = self.context.socket(zmq.PULL)
        self.detector.setsockopt(zmq.RCVHWM, rcvhwm)
        self.detector.setsockopt(zmq.LINGER, 0)
        self.detector.connect(endpoint)
        self.sockets: list[zmq.Socket] = [self.detector]
        self.motor: zmq.Socket | None = None
        self.endpoint_bound = ""
        if listen:
            self.motor = self.context.socket(zmq.PULL)
            self.motor.setsockopt(zmq.LINGER, 0)
            try:
                self.endpoint_bound = bind(self.motor, listen,
                                           "dectris source: cannot listen on {endpoint}")
            except OSError:
                self.close()
                raise
            self.sockets.append(self.motor)
            self.machine.lane_endpoint = self.endpoint_bound
        self.poller = zmq.Poller()
        for sock in self.sockets:
            self.poller.register(sock, zmq.POLLIN)
        log.info("dectris stream v%d: connected to %s%s", version, endpoint,
                 f", motors on {self.endpoint_bound}" if listen else "")

    # ------------------------------------------------------------ receiving

    def receive(self, timeout: float) -> list[list]:
        """Our messages (each a list of parts) from what arrived within `timeout` s,
        and from the timeouts due (join, series); often none."""
        deadline = self.machine.deadline()
        wait = timeout if deadline is None else min(timeout, max(deadline - time.monotonic(), 0))
        out: list = []
        if self.poller.poll(max(int(wait * 1000), 0)):
            lanes = [(self.detector, self._detector_message)]
            if self.motor is not None:
                lanes.append((self.motor, self._motor_message))
            for _ in range(DRAIN):
                got = False
                for sock, handle in lanes:
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        continue
                    out += handle(parts)
                    got = True
                if not got:
                    break
        out += self.machine.tick(time.monotonic())
        return [self._encode(m) for m in out]

    def _encode(self, msg: Message) -> list:
        parts = encode(msg)
        if isinstance(msg, Start):  # say so now if the runner is going to refuse it
            try:
                decode(parts)
            except MessageError as exc:
                self._bad("bad_start", f"our start of scan {msg.scan_id} will be refused: {exc}")
        return parts

    def close_series(self, reason: str = "source closed") -> list[list]:
        """End the open series now (our scan ends as aborted with `reason`)."""
        return [self._encode(m) for m in self.machine.close(reason, time.monotonic())]

    def _detector_message(self, parts: list) -> list:
        self.counters["messages"] += 1
        try:
            msg = self._decode(parts)
        except DetectorError as exc:
            self._bad("malformed", f"detector message: {exc}")
            return []
        return self.machine.detector(msg, time.monotonic())

    def _motor_message(self, parts: list) -> list:
        self.counters["motor_messages"] += 1
        try:
            msg = decode(parts)
        except MessageError as exc:
            self._bad("motor_malformed", f"motor lane: {exc}")
            return []
        if not isinstance(msg, Point):
            self._bad("motor_ignored", f"motor lane: a {type(msg).__name__.lower()} message "
                                       f"(only points are read there)")
            return []
        if msg.frames:
            log.debug("motor lane: point %d carries frames; they are ignored", msg.point_id)
            msg.frames = {}
        return self.machine.motor(msg, time.monotonic())

    def _bad(self, kind: str, reason: str) -> None:
        self.counters[kind] += 1
        self.last_error = reason
        log.warning("%s: %s", kind, reason)

    def scan_refused(self, scan_id: str, reason: str) -> None:
        """The runner refused our scan `scan_id` (its start, e.g. a `[source] detector`
        the series does not have, or its file): the newest series of that scan id says
        `rejected` and why in the history, not the detector's end
        (`stream.run.loop.tell_refused`)."""
        cur, done = self.machine.current, self.machine.finished
        if cur is not None and cur.scan_id == scan_id:
            key = (cur.start.series_id, scan_id)
        else:
            key = next(((h["series_id"], scan_id) for h in reversed(done)
                        if h["scan_id"] == scan_id), None)
        if key is not None and key not in self.refusals:
            self.refusals[key] = reason or "refused by the runner (see its log)"
            while len(self.refusals) > 64:  # (the history holds the last 16)
                del self.refusals[next(iter(self.refusals))]

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """State of the series, its ids and every counter (see `series.SeriesMachine`)."""
        out = {"kind": "dectris", "stream_version": self.version, "endpoint": self.endpoint,
               "listen": self.endpoint_bound, **self.counters, "last_error": self.last_error,
               **self.machine.status()}
        if (out.get("series_id"), out.get("scan_id")) in self.refusals:
            out["refused"] = self.refusals[out["series_id"], out["scan_id"]]
        said = self.refusals
        out["history"] = [{**h, "status": "rejected", "reason": said[h["series_id"], h["scan_id"]]}
                          if (h["series_id"], h["scan_id"]) in said else h
                          for h in out["history"]]
        return out

    def close(self) -> None:
        for sock in (self.detector, self.motor):
            if sock is not None and not sock.closed:
                sock.close(linger=0)

    def __enter__(self) -> DectrisSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_source(source_config: dict) -> DectrisSource:
    """A DectrisSource from a `[source]` table with kind = "dectris". Empty `motors` /
    `counters` lists mean: the names the motor lane's first point brings; an empty
    `trajectory`: a sweep in the first motor."""
    cfg = dict(source_config)
    unknown = set(cfg) - SOURCE_KEYS
    if unknown:
        raise ValueError(f"[source] kind dectris: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(SOURCE_KEYS))})")
    if cfg.get("kind", "dectris") != "dectris":
        raise ValueError(f"[source]: kind {cfg.get('kind')!r} is not dectris")
    if not isinstance(cfg.get("detector_endpoint"), str) or not cfg["detector_endpoint"]:
        raise ValueError("[source] kind dectris: detector_endpoint (e.g. "
                         "\"tcp://eiger:31001\") is required")
    types = {"stream_version": int, "listen": str, "motors": list, "counters": list,
             "join_timeout": (int, float), "series_timeout": (int, float), "rcvhwm": int,
             "trajectory": dict}
    for key, typ in types.items():
        if key in cfg and (isinstance(cfg[key], bool) or not isinstance(cfg[key], typ)):
            raise ValueError(f"[source] kind dectris: {key} has the wrong type "
                             f"({type(cfg[key]).__name__})")
    return DectrisSource(endpoint=cfg["detector_endpoint"],
                         version=cfg.get("stream_version", 2), listen=cfg.get("listen", ""),
                         motors=cfg.get("motors") or None, counters=cfg.get("counters") or None,
                         trajectory=cfg.get("trajectory") or None,
                         join_timeout=float(cfg.get("join_timeout", 2.0)),
                         series_timeout=float(cfg.get("series_timeout", 30.0)),
                         rcvhwm=cfg.get("rcvhwm", 64))
