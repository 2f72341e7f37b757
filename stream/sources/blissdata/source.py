"""BlissdataSource: follows the scans Bliss publishes in its Redis data store.

A thread of its own (`stream.sources.bridge`) waits for the next scan
(`DataStore.get_next_scan`), loads it, waits until it is PREPARED (its streams
are declared), sends our start, then reads the frame stream and the streams of
our motors and counters with one cursor group until every stream is sealed,
sending a point as soon as its frame and values are there, and our end with
the status Bliss gives (`end_reason`). A lost Redis connection is retried for
`reconnect_timeout` s: the scan goes on where it was, or ends as aborted with
the reason. Then the next scan.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

from stream.core.messages import DetectorInfo, End, Point, Start
from stream.sources.blissdata.frames import Assembler, take
from stream.sources.blissdata.running import quiet_text, running_scans, superseded
from stream.sources.blissdata.scaninfo import (
    clock_of,
    derived,
    end_status,
    image_channels,
    match_channels,
    npoints_of,
    pick_image,
    scan_id,
    trajectory_from_info,
)
from stream.sources.bridge import Bridge

log = logging.getLogger(__name__)

POLL = 0.2  # s a blocking Redis read waits at most (the thread checks for stop)
CLOCK = "<clock>"  # the Assembler's column of the channel that dates points
SUPERSEDED_EVERY = 2.0  # s between looks for a newer scan of the session while none comes


class ScanGone(Exception):
    """The scan in progress cannot be read any more; the text says why."""


class BlissdataSource:
    """Bliss scans from `redis_url`, as our messages (see the module docstring)."""

    def __init__(self, *, redis_url: str, motors: list[str], counters: list[str],
                 channels: dict[str, str] | None = None, image: str = "", session: str = "",
                 trajectory: dict | None = None, frame_timeout: float = 10.0,
                 reconnect_timeout: float = 30.0, derive_points: int = 50, rcvhwm: int = 64,
                 quiet_warning: float = 600.0):
        try:
            import blissdata  # noqa: F401
        except ImportError:
            raise ValueError("[source] kind blissdata needs the blissdata package: "
                             "pip install -e '.[bliss]'") from None
        self.url, self.session, self.image = redis_url, session, image
        self.motors, self.counters = list(motors), list(counters)
        self.channels = dict(channels or {})
        self.trajectory = dict(trajectory or {})
        self.frame_timeout, self.reconnect_timeout = frame_timeout, reconnect_timeout
        self.derive_points = derive_points
        self.quiet_warning = quiet_warning  # s without data before status says how to end
        self.counts: Counter = Counter(scans=0, points=0, bad_frames=0, skipped_scans=0,
                                       reconnects=0, frame_retries=0)
        self.last_error = ""
        self.scan = ""  # the scan being followed
        self.key = ""  # its Redis key
        self.heard = 0.0  # when it last gave data (monotonic)
        self.endpoint = self.endpoint_bound = redis_url
        # for the start banner: which scans are followed
        self.reading = (f"following Bliss scans on {redis_url}, "
                        f"{f'session {session} only' if session else 'every session'}")
        self.done = False  # follows scans until closed
        self.bridge = Bridge("blissdata", rcvhwm)
        self.sockets = self.bridge.sockets
        self.store: Any = None
        self.since: str | None = None
        self.pending: list[str] = []  # scans Bliss was running at start-up, to follow first
        self.backlog = 0  # points of the scan followed that were in Redis before we started
        self._connect(first=True)
        self.bridge.start(self._run, "blissdata-source")
        log.info("blissdata: %s", self.reading)

    # ------------------------------------------------------------ the runner's side

    def receive(self, timeout: float = 0.0) -> list[list]:
        return self.bridge.receive(timeout)

    @property
    def following(self) -> str:
        """The scan followed until Bliss closes it (or Redis stays away for
        reconnect_timeout s): its silence, a pause of Bliss, is no reason to end it."""
        return self.scan

    def status(self) -> dict[str, Any]:
        """The counters; `quiet_s`: s the scan followed has had no data (None: no scan);
        past quiet_warning s, `warning` says so and how to end it if its Bliss died."""
        scan, key, heard = self.scan, self.key, self.heard
        quiet = time.monotonic() - heard if scan else None
        out = {"kind": "blissdata", "endpoint": self.url, "scan": scan,
               "quiet_s": None if quiet is None else round(quiet, 1),
               **self.counts, "last_error": self.last_error}
        if quiet is not None and quiet >= self.quiet_warning:
            out["warning"] = quiet_text(scan, key, self.url, quiet)
        return out

    def close(self) -> None:
        self.bridge.close()

    def __enter__(self) -> BlissdataSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ the thread

    def _connect(self, first: bool = False) -> None:
        from blissdata.redis_engine.store import DataStore

        try:
            self.store = DataStore(self.url)
            if self.since is None:  # scans from now on, and those running now (from their
                self.since, self.pending = running_scans(self.store, self.session)  # start)
        except Exception as exc:  # redis's ConnectionError, or no blissdata database there
            if first:
                raise ValueError(f"blissdata: cannot use {self.url}: {exc}") from None
            raise

    def _stopping(self) -> bool:
        return self.bridge.stopping.is_set()

    def _run(self) -> None:
        from blissdata.exceptions import NoScanAvailable

        pending, self.pending = self.pending, []
        for key in pending:  # a restart mid-scan: the file a crash left open is continued
            self._take_scan(key, running=True)
        while not self._stopping():
            try:
                self.since, key = self.store.get_next_scan(since=self.since, timeout=POLL)
            except NoScanAvailable:
                continue
            except Exception as exc:  # Redis gone between scans: wait for it
                if not self._reconnect(f"waiting for a scan: {exc}", until=None):
                    return
                continue
            self._take_scan(key)

    def _take_scan(self, key: str, running: bool = False) -> None:
        """Follow one scan; `running`: one Bliss was running when we started, whose points
        already in Redis then are dated by its clock as before (or, with none, NaN: equal
        to any time, so a crash-left file's stored points are kept when they come again)."""
        try:
            self._follow(key, running)
        except Exception as exc:  # never let the thread die on one scan
            self._bad("skipped_scans", f"scan {key}: {type(exc).__name__}: {exc}")
        finally:
            self.scan, self.key, self.backlog = "", "", 0

    def _reconnect(self, why: str, until: float | None) -> bool:
        """Reconnect to Redis until `until` (monotonic; None: as long as we run)."""
        self._bad("reconnects", f"redis connection lost ({why}); reconnecting")
        while not self._stopping() and (until is None or time.monotonic() < until):
            try:
                self._connect()
                self.store._redis.ping()
                log.info("blissdata: connected again to %s", self.url)
                self.last_error += f" (recovered at {time.strftime('%H:%M:%S')})"
                return True
            except Exception:  # still down
                time.sleep(POLL)
        return False

    def _load(self, key: str) -> Any:
        scan = self.store.load_scan(key)
        other = getattr(scan, "session", None)
        if self.session and other != self.session:  # said once: this scan is not read again
            self.counts["skipped_scans"] += 1
            log.info("blissdata: scan %s skipped: session %s, not %s", scan_id(
                scan.name, scan.number, other), other, self.session)
            return None
        return scan

    def _follow(self, key: str, running: bool = False) -> None:
        from blissdata.redis_engine.scan import ScanState

        scan = self._load(key)
        if scan is None:
            return
        if running:
            self.backlog = max((len(s) for s in scan.streams.values()), default=0)
            log.info("blissdata: scan %s was running when we started (%d points out): "
                     "followed from its start", scan_id(scan.name, scan.number, getattr(
                         scan, "session", None)), self.backlog)
        while scan.state < ScanState.PREPARED and not self._stopping():
            scan.update(timeout=POLL)
        if self._stopping():
            return
        sid = scan_id(scan.name, scan.number, getattr(scan, "session", None))
        self.scan, self.key, self.heard = sid, key, time.monotonic()
        streams = scan.streams
        image = pick_image(streams, self.image)
        until = time.monotonic() + self.frame_timeout
        while image is None and scan.state < ScanState.CLOSED and not self._stopping() \
                and time.monotonic() < until:  # prepared, the streams not yet seen: they
            scan.update(timeout=POLL)  # come with the scan's next state (seen under load)
            streams = scan.streams
            image = pick_image(streams, self.image)
        if image is None:
            self._bad("skipped_scans", f"scan {sid}: no frame stream {self.image or '(2D)'} "
                      f"(image channels: {', '.join(image_channels(streams)) or 'none'})")
            return
        names = [n for n in streams if n != image]
        motors, missing = match_channels(names, self.motors, self.channels)
        counters, missing_c = match_channels(names, self.counters, self.channels)
        if missing or missing_c:
            log.warning("scan %s: no Bliss channel for %s (channels: %s)", sid,
                        ", ".join(missing + missing_c), ", ".join(names))
        info = scan.info
        clock = clock_of(names, info)
        npoints = npoints_of(info)
        spec = self.trajectory or trajectory_from_info(info, motors)
        im = streams[image]
        start = Start(sid, {image.split(":")[0]: DetectorInfo(tuple(im.shape), im.dtype.name)},
                      list(motors), list(counters), npoints, spec,
                      {"sample": str(info.get("sample_name") or info.get("sample") or ""),
                       "bliss": {"key": key, "name": scan.name, "number": scan.number,
                                 "session": getattr(scan, "session", None),
                                 "type": info.get("type"), "image": image,
                                 "channels": {**motors, **counters},
                                 "clock": clock[0] if clock else None}})
        self.counts["scans"] += 1
        log.info("blissdata: scan %s (%s points, trajectory %s)", sid, npoints or "open",
                 spec or "derived from the positions")
        status, reason, sent = self._read(scan, key, start, image, motors, counters, clock)
        # the start's npoints, whatever came (an abort's are missing); an open-ended
        # scan's are the points sent
        self.bridge.emit(End(sid, status, sent if npoints is None else npoints, reason))

    def _read(self, scan: Any, key: str, start: Start, image: str, motors: dict[str, str],
              counters: dict[str, str], clock: tuple[str, float] | None
              ) -> tuple[str, str, int]:
        """Points until every stream is sealed: (status, reason, points sent). A point's
        time is when Bliss acquired it (`clock`: its channel, the offset to add); without
        one, when it came (NaN for one already out when we started: that is unknown)."""
        from blissdata.exceptions import EndOfStream
        from blissdata.streams import CursorGroup
        from redis.exceptions import RedisError

        wanted = {image: None, **{ch: n for n, ch in {**motors, **counters}.items()}}
        if clock is not None:  # the clock's column: its name if a counter already has it
            wanted.setdefault(clock[0], CLOCK)
        clock_col = wanted[clock[0]] if clock is not None else ""
        asm = Assembler(list(motors), list(counters), self.frame_timeout,
                        extra=(CLOCK,) if clock_col == CLOCK else ())
        consumed = {name: 0 for name in wanted}  # items taken per stream (for a reconnect)
        group = CursorGroup({n: s for n, s in scan.streams.items() if n in wanted})
        held: list[Point] | None = None if start.trajectory else []
        started, sent, final = start.trajectory != {}, 0, False
        if started:
            self.bridge.emit(start)
        look = time.monotonic() + SUPERSEDED_EVERY
        warned = False  # quiet for quiet_warning s: said once (again after new data)
        try:
            while not self._stopping():
                if not final and not warned and \
                        time.monotonic() - self.heard >= self.quiet_warning:
                    warned = True
                    log.warning("blissdata: %s", quiet_text(
                        self.scan, key, self.url, time.monotonic() - self.heard))
                if not final and time.monotonic() > look:  # nothing for a while: still on?
                    look = time.monotonic() + SUPERSEDED_EVERY
                    self._superseded(scan, key)
                try:
                    views = group.read(timeout=POLL) if not final else {}
                    if views:
                        self.heard = time.monotonic()
                        look, warned = self.heard + SUPERSEDED_EVERY, False
                except EndOfStream:
                    final, views = True, {}
                except Exception as exc:  # Redis connection lost mid-scan
                    scan, group = self._resume(key, wanted, exc)
                    views = {}
                try:  # a view reads its items from Redis too: lost there, the same
                    for stream, view in views.items():
                        take(stream.name, view, wanted, consumed, asm)
                except (RedisError, OSError) as exc:
                    scan, group = self._resume(key, wanted, exc)
                for i, frame, m, c in asm.ready(time.monotonic(), final):
                    when = asm.value(clock_col, i) if clock is not None else None
                    if when is not None and math.isfinite(when):
                        when += clock[1]  # type: ignore[index]
                    else:
                        when = math.nan if i < self.backlog else time.time()
                    p = Point(start.scan_id, i, when, m, c)
                    if isinstance(frame, str):
                        p.extra["error"] = frame
                        self.counts["bad_frames"] += 1
                    else:
                        p.frames[next(iter(start.detectors))] = frame
                    if held is not None and not started:
                        held.append(p)
                        continue
                    sent += self.bridge.emit(p)
                if not started and (final or len(held) >= self.derive_points):
                    start = derived(start, asm.positions(), len(held))
                    started = self.bridge.emit(start)
                    for p in held:
                        sent += self.bridge.emit(p)
                    held = None
                if final and not asm.frames:
                    break
                if final:
                    time.sleep(POLL / 4)  # a frame file still being retried
            self.counts["points"] += sent
            self.counts["frame_retries"] += asm.retries
            if self._stopping():
                return "abort", "peakstream stopped", sent
            return (*self._closed(scan, key), sent)
        except ScanGone as exc:
            if not started:
                self.bridge.emit(derived(start, asm.positions(), len(held or ())))
            return "abort", str(exc), sent
        finally:
            asm.reader.close()

    def _superseded(self, scan: Any, key: str) -> None:
        """ScanGone if the scan is over though its streams are not sealed: closed by force
        or deleted (blissdata's memory tracker, or a person: `quiet_text`), or Bliss
        created a newer scan of this one's session (this one's Bliss died without closing
        it); either way it would be followed for good."""
        from blissdata.exceptions import ScanNotFoundError
        from blissdata.redis_engine.scan import ScanState
        from redis.exceptions import RedisError

        try:
            scan.update(block=False)
            if scan.state >= ScanState.CLOSED:
                raise ScanGone(end_status(scan.info)[1] or "bliss closed the scan, its "
                               "streams still open")
            newer = superseded(self.store, key, getattr(scan, "session", None))
        except ScanNotFoundError:
            raise ScanGone(self._deleted(key)) from None
        except (RedisError, OSError):
            return  # Redis away: the next read reconnects
        if newer:
            raise ScanGone(f"Bliss started another scan of the session ({newer}) without "
                           f"closing this one")

    def _closed(self, scan: Any, key: str) -> tuple[str, str]:
        """Our status and reason once Bliss has closed the scan (its streams are sealed
        before); abort if it does not within reconnect_timeout s. A scan deleted from
        Redis (closed by force, then removed: `quiet_text`) has its reason read there."""
        from blissdata.exceptions import ScanNotFoundError
        from blissdata.redis_engine.scan import ScanState

        until = time.monotonic() + self.reconnect_timeout
        try:
            while scan.state < ScanState.CLOSED and not self._stopping():
                if time.monotonic() > until:
                    return "abort", (f"bliss did not close the scan within "
                                     f"{self.reconnect_timeout:g} s")
                scan.update(timeout=POLL)
        except ScanNotFoundError:
            return "abort", self._deleted(key)
        return end_status(scan.info)

    def _deleted(self, key: str) -> str:
        """The reason of a scan deleted from Redis (its keys live on for 10 s)."""
        try:
            why = self.store._redis.json().get(key, "info.end_reason")
        except Exception:  # gone already, or Redis away
            why = None
        return f"bliss deleted the scan from Redis (end_reason {why or 'unknown'})"

    def _resume(self, key: str, wanted: dict, exc: Exception) -> tuple[Any, Any]:
        """Reconnect and read the scan again from its start (items already taken are
        skipped); ScanGone when Redis stays away or the scan is no longer there."""
        from blissdata.streams import CursorGroup

        until = time.monotonic() + self.reconnect_timeout
        if not self._reconnect(f"reading scan {self.scan}: {exc}", until):
            raise ScanGone(f"redis connection lost and not back within "
                           f"{self.reconnect_timeout:g} s: {exc}")
        try:
            scan = self.store.load_scan(key)
        except Exception as exc2:
            raise ScanGone(f"redis came back without the scan ({exc2})") from None
        return scan, CursorGroup({n: s for n, s in scan.streams.items() if n in wanted})

    def _bad(self, kind: str, reason: str) -> None:
        self.counts[kind] += 1
        self.last_error = reason
        log.warning("blissdata: %s", reason)
