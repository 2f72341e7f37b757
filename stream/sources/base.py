"""The source contract: where a runner's messages come from, whatever the kind.

Every source (our ZeroMQ lane, a DECTRIS detector, Bliss, an EPICS
areaDetector, a recorded scan, the simulator) gives the runner the same face,
`Source`: messages of our protocol already encoded (PROTOCOL.md), so the
runner decodes and checks them in one place whatever they came from. `open_source` makes the one the
config (or the command) asks for; `run`, `daemon` and `replay` all go
through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from stream.core.messages import End, Point, Start
from stream.wire.codec import encode

if TYPE_CHECKING:
    from stream.config.schema import Config


# sources of a control system, which cannot be told to wait: opened before the daemon's
# warm-up, they hold what comes (Bliss's scans stay in Redis; pvAccess holds `queue`
# updates, and a gap beyond is counted and missing) until the runner reads
HOLDING_KINDS = ("blissdata", "pva")


@runtime_checkable
class Source(Protocol):
    """Where a scan's messages come from.

    `sockets`: ZeroMQ sockets the runner polls together with its workers'
    (readable: `receive` has something); empty for a source that is always
    ready (a recording). `receive(timeout)`: the messages that came within
    `timeout` s (each a list of wire parts), often none; a source with
    timeouts of its own (DECTRIS: join, series) also answers them here.
    `done`: a finite source has given its last message. `endpoint`: what it
    reads, for people (an address, a file name). A source that ends its scans
    itself (Bliss, an EPICS acquisition) may also have `following`: the scan_id of
    the scan it still follows, whose silence the runner's end_timeout then
    never ends (`stream.run.ending.followed`).
    """

    endpoint: str
    sockets: list[Any]
    done: bool

    def receive(self, timeout: float) -> list[list]: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: Any) -> None: ...


class RecordingSource:
    """A recorded (or simulated) scan as a source: its start, its points and an end,
    encoded as they come over the wire, one message per `receive`. A recording that
    breaks off (OSError, ValueError) ends the scan as fail; `error` says why. The end's
    npoints is the start's when it gives one (a recording with a file missing gives
    fewer points: they are the scan's missing ones, not another count), else the
    number of points given."""

    def __init__(self, start: Start, points: Iterable[Point], endpoint: str):
        self.start = start
        self.endpoint = endpoint
        self.sockets: list[Any] = []
        self.done = False
        self.points = 0  # points given so far
        self.error = ""
        self._next: Callable[[], list] = self._start
        self._iter: Iterator[Point] = iter(points)

    def receive(self, timeout: float = 0.0) -> list[list]:
        return [] if self.done else [self._next()]

    def _start(self) -> list:
        self._next = self._point
        return encode(self.start)

    def _point(self) -> list:
        npoints = self.points if self.start.npoints is None else self.start.npoints
        try:
            point = next(self._iter)
        except StopIteration:
            end = End(self.start.scan_id, "success", npoints)
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            end = End(self.start.scan_id, "fail", npoints, f"replay stopped: {exc}")
        else:
            self.points += 1
            return encode(point)
        self.done = True
        return encode(end)

    def status(self) -> dict[str, Any]:
        return {"kind": "recording", "endpoint": self.endpoint, "points": self.points,
                "done": self.done, "error": self.error}

    def close(self) -> None:
        self.done = True
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> RecordingSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_source(config: Config, recording: tuple[Start, Iterable[Point]] | None = None,
                name: str = "") -> Source:
    """The source a session reads: a `recording` (start, points: a recorded or simulated
    scan, `name` for people) when given, else the one the config's `[source] kind`
    names: zmq (our protocol on a bound PULL), dectris (a DECTRIS detector and our
    motor lane), blissdata (Bliss scans from Redis) or pva (an EPICS areaDetector).
    OSError when an endpoint cannot be bound, ValueError for a bad `[source]`."""
    if recording is not None:
        start, points = recording
        return RecordingSource(start, points, name or start.scan_id)
    src = config["source"]
    if src["kind"] == "dectris":
        from stream.sources.dectris.source import SOURCE_KEYS, make_source

        return make_source({k: src[k] for k in SOURCE_KEYS if k in src})
    if src["kind"] == "blissdata":
        from stream.sources.blissdata import make_source as blissdata_source

        return blissdata_source(src)
    if src["kind"] == "pva":
        from stream.sources.pva import make_source as pva_source

        return pva_source(src)
    if src["kind"] != "zmq":
        raise ValueError(f"[source] kind {src['kind']!r} is not one of zmq, dectris, "
                         f"blissdata, pva")
    from stream.sources.zmq import ZmqSource

    return ZmqSource(src["listen"], src["rcvhwm"], max_frame_bytes=src["max_frame_bytes"])
