"""`peakstream daemon`: a headless service that takes scan after scan.

One `ScanRunner` for the whole session, fed by the config's source (our
protocol on a bound PULL, or a DECTRIS detector: `stream.sources.dectris`),
one output file per scan named by `[output] pattern`, the control socket
(`stream.control`) and the live lane (`stream.live`).

States: idle (no scan open), running (a scan open), stopping (SIGTERM,
SIGINT or a `stop` request: no new scans; the scan in progress goes on until
its end message, until it has been silent for end_timeout s, or at most
end_timeout s after the stop; then it is written and the daemon exits 0). A
second signal aborts the open scan, writes it and exits 0 (a second `stop`
request does not).

Logs go to stderr and to `[daemon] log_file` (default DIRECTORY/peakstream.log),
rotated at log_max_bytes keeping log_backups files. The first line on stderr
says where it listens:

    peakstream daemon 0.1.0: listening on tcp://..., control on tcp://..., live on
    tcp://..., writing to DIR, log LOGFILE
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import secrets
import signal
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream import __version__
from stream.config.schema import Config
from stream.run.params import ParamError
from stream.run.runner import ScanRunner
from stream.service.control import TOKEN_NAME, ControlServer, make_token
from stream.service.live import LiveLane
from stream.service.warming import StoppedStarting, WarmingStatus, stop_while_starting
from stream.sources.base import HOLDING_KINDS, open_source
from stream.store.leftover import warn_open_files

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 0.05  # s between status snapshots for the control thread
KEEP_RESULTS = 100  # summaries of ended scans kept for status


class NoFollowFileHandler(logging.handlers.RotatingFileHandler):
    """The rotating log file, opened without following a symlink (one planted at its name
    is refused, never written through) and readable by the daemon's user only."""

    def _open(self):  # noqa: ANN202 (logging's own hook)
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def unsafe_directory(path: Path, allow_shared: bool) -> str:
    """Why the output directory is unsafe to write in, or "": world-writable without
    the sticky bit (anyone could plant or swap files there) unless allowed."""
    try:
        st = os.stat(path)
    except OSError:
        return ""  # made by us below
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX and not allow_shared:
        return (f"output directory {path} is world-writable without the sticky bit: anyone "
                f"could plant files there ([output] shared_directory = true to accept)")
    return ""


def setup_logging(config: Config, output_dir: Path) -> str:
    """Root logging at INFO at least, to stderr (already set up by the CLI) and to the
    rotating log file; returns the log file's path ("" when it cannot be opened)."""
    d = config["daemon"]
    path = Path(d["log_file"]) if d["log_file"] else output_dir / "peakstream.log"
    root = logging.getLogger()
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in root.handlers:
        h.setFormatter(fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = NoFollowFileHandler(path, maxBytes=d["log_max_bytes"],
                                      backupCount=d["log_backups"])
    except OSError as exc:
        log.warning("no log file: cannot open %s: %s (logging to stderr only)", path, exc)
        return ""
    handler.setFormatter(fmt)
    root.addHandler(handler)
    return str(path)


class Daemon:
    """The source, the runner, the control socket and the live lane of one session."""

    def __init__(self, config: Config, output_dir: str | Path | None = None,
                 warm: Callable[[Config], Any] | None = None,
                 on_control: Callable[[str], None] | None = None):
        """`warm(config)` loads the kernels (stream.run.warmup) after the control socket
        is bound (status says "warming"; `on_control(endpoint)` is told where it is) and
        before the data socket is: a sender that connects early waits in ZeroMQ's queue.
        A control system's source (HOLDING_KINDS) is opened before it: Bliss and an IOC
        cannot be told to wait, so a scan that starts during the warm-up is followed from
        its start and held back (the source's own back-pressure) until the runner reads."""
        self.config = config
        self.starting = True  # until source, live lane and web are up: status says starting
        self.warming = False
        self.stopping = False
        self._stop_logged = False
        self.aborting = False
        self.warm_status: WarmingStatus | None = None  # kernels loaded, while warming
        self.stop_time = 0.0
        self.scans = 0
        self.runner = ScanRunner(config, output_dir=output_dir,
                                 on_scan_end=self._scan_ended)
        self.source = self.live = self.control = self.web = None
        try:
            if config["control"]["endpoint"]:
                token_file = Path(config["control"]["token_file"] or
                                  self.runner.output_dir / TOKEN_NAME)
                try:
                    token = make_token(token_file)
                except OSError as exc:  # nobody may set or stop; SIGTERM still works
                    log.error("control token %s cannot be made: %s; set / checkpoint / stop "
                              "are refused", token_file, exc)
                    token = secrets.token_hex(32)
                self.control = ControlServer(config["control"]["endpoint"], self.request_stop,
                                             self.request, token=token,
                                             token_file=str(token_file))
                self.runner.watch[self.control.inbox] = self.control.serve
                self.warming = warm is not None
                self.control.start(self.snapshot(self.runner.status()))
            if config["source"]["kind"] in HOLDING_KINDS:  # scans that cannot wait
                self.source = open_source(config)
            if warm is not None:
                self.warming = True
                if self.control is not None and on_control is not None:
                    on_control(self.control.endpoint)
                with WarmingStatus(config, self._warming_tick) as self.warm_status:
                    warm(config)
                self.warming = False
            if self.source is None:
                self.source = open_source(config)
            live = config["live"]
            if live["endpoint"]:
                self.live = LiveLane(live["endpoint"], live["interval"], live["frame_rate"],
                                     live["frame_bin"], live["sndhwm"],
                                     max_map_cells=live["max_map_cells"])
                self.runner.live = self.live
            self.web = self._start_web(config["web"])
        except BaseException:
            self.close()
            raise
        self._next_snapshot = 0.0
        self.starting = False
        self._tick(force=True)  # ready: idle

    def _start_web(self, web: dict[str, Any]) -> Any:
        """The web view's child process (`[web] port` >= 0), fed by the live lane."""
        if web["port"] < 0 or self.live is None:
            return None
        from stream.service.web.process import WebProcess
        from stream.service.web.server import connectable

        control = connectable(self.control.endpoint) if self.control else ""
        return WebProcess(connectable(self.live.endpoint), web["port"], web["address"],
                          control, web["allow_control"])

    @property
    def state(self) -> str:
        if self.warming:
            return "warming"
        if self.starting:
            return "starting"
        if self.stopping:
            return "stopping"
        return "running" if self.runner.current is not None else "idle"

    def endpoints(self) -> dict[str, str]:
        return {"data": getattr(self.source, "endpoint_bound", ""),
                "control": self.control.endpoint if self.control else "",
                "live": self.live.endpoint if self.live else ""}

    # ------------------------------------------------------------ the loop

    def run(self) -> int:
        """Take scans until stopped; 0 when stopped cleanly."""
        limit = self.config["source"]["end_timeout"]
        try:
            while True:
                if self.aborting:
                    if self.runner.current is not None:
                        self.runner.abort("aborted: a second stop signal")
                    break
                if self.stopping:
                    if not self._stop_logged:
                        self._stop_logged = True
                        cur = self.runner.current
                        log.info("stop requested: %s", "no scan in progress" if cur is None
                                 else f"finishing scan {cur.scan.scan_id} (at most "
                                      f"{limit:g} s)")
                    if self.runner.current is None:
                        break
                    if time.monotonic() - self.stop_time > limit:
                        self.runner.abort(f"stopped: the scan did not end within "
                                          f"end_timeout ({limit:g} s) of the stop")
                        break
                try:
                    self.runner.step(self.source, timeout=0.1)
                except Exception as exc:  # a bug of ours: that scan fails, the service goes on
                    self._internal_error(exc)
                self._tick()
        finally:
            self._tick(force=True)
            self.close()
        log.info("peakstream daemon stopped after %d scan(s)", self.scans)
        return 0

    def _internal_error(self, exc: Exception) -> None:
        """An error of ours while a message was handled: log it, end the scan in progress
        as failed (closing its file if even that fails) and go on."""
        log.exception("internal error; the scan in progress fails")
        r = self.runner
        r.last_error = reason = f"internal error: {type(exc).__name__}: {exc}"
        cur = r.current
        try:
            r.abort(reason, "fail")
        except Exception:
            log.exception("scan %s could not be finished", cur.scan.scan_id)
            r.current = None
            try:
                cur.collector.store.close("fail", reason)
            except Exception:
                pass

    def stop(self, *_: Any) -> None:
        """SIGTERM / SIGINT: the first finishes the open scan, a second aborts it."""
        if self.stopping:
            self.aborting = True
            return
        self.request_stop()

    def request_stop(self) -> None:
        """Finish the open scan, take no new one, exit (a `stop` request; never aborts)."""
        if not self.stopping:
            self.stop_time = time.monotonic()
            # at once (from the control thread too): a start already on its way is refused
            self.runner.accepting = False
            self.stopping = True

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close("daemon stopped")
        for part in (self.web, self.control, self.live, self.source):
            if part is not None:
                part.close()

    def _tick(self, force: bool = False) -> None:
        """Refresh the control thread's snapshot and the live progress."""
        now = time.monotonic()
        if not force and now < self._next_snapshot:
            return
        self._next_snapshot = now + SNAPSHOT_EVERY
        if self.web is not None:
            self.web.watch()  # exited: logged and restarted
        status = self.runner.status()
        if self.control is not None:
            self.control.update(self.snapshot(status))
        if self.live is not None:
            self.live.progress(status, self.state, force)

    def _warming_tick(self) -> None:
        """The status refreshed during the warm-up (from WarmingStatus's thread)."""
        if self.control is not None and self.warming:
            self.control.update(self.snapshot(self.runner.status()))

    def _scan_ended(self, summary: dict[str, Any]) -> None:
        self.scans += 1
        del self.runner.results[:-KEEP_RESULTS]  # a service runs for days
        self._next_snapshot = 0.0

    # ------------------------------------------------------------ control

    def snapshot(self, status: dict[str, Any]) -> dict[str, Any]:
        r = self.runner
        source = (self.source.status() if hasattr(self.source, "status") else
                  {"kind": self.config["source"]["kind"]} if self.source is None else {})
        warming = ({"warmup": self.warm_status.progress}
                   if self.warming and self.warm_status is not None else {})
        return {**warming, "state": self.state, "pid": os.getpid(), "version": __version__,
                "scans_done": self.scans,
                "endpoints": self.endpoints(), "output_dir": str(r.output_dir),
                "last_scan": r.results[-1] if r.results else None,
                "params": r.params.changes, "source": source,
                "live": self.live.status() if self.live else None,
                "web": self.web.status() if self.web else None, "scan": None, **status}

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """get / set / checkpoint, in the main loop between points."""
        cmd = req["cmd"]
        try:
            if cmd == "get":  # with what `set` may change during a scan
                params = self.runner.params
                return {"ok": True, "params": params.get(req.get("node"), req.get("key")),
                        "settable": {n: params.settable(n) for n in params.nodes()},
                        "unused": {n: u for n in params.nodes() if (u := params.unused(n))}}
            if cmd == "set":
                for k in ("node", "key", "value"):
                    if k not in req:
                        raise ParamError(f"set needs 'node', 'key' and 'value' (no {k!r})")
                return {"ok": True, **self.set_param(req["node"], req["key"], req["value"])}
            if cmd == "checkpoint":
                return {"ok": True, **self.checkpoint()}
        except (ParamError, OSError, RuntimeError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def set_param(self, node: Any, key: Any, value: Any) -> dict[str, Any]:
        """A node parameter change (ParamError if refused), in force from the next point
        accepted: recorded now in the open scan's file (event "set") and, with that
        point's id, when it is accepted (event "param", by the runner)."""
        change = self.runner.params.set(node, key, value)
        cur = self.runner.current
        if cur is not None:
            cur.collector.store.event("set", json.dumps(change))
            change["newest_received"] = cur.newest
        log.info("set %s.%s = %r (was %r)", node, key, change["value"], change["old"])
        return change

    def checkpoint(self) -> dict[str, Any]:
        """The open scan's collector checkpoints (or, without checkpoints, flushes) now."""
        cur = self.runner.current
        if cur is None:
            raise RuntimeError("no scan in progress")
        how = "checkpoint" if hasattr(cur.collector, "checkpoint") else "flush"
        getattr(cur.collector, how)()
        return {"scan_id": cur.scan.scan_id, "file": str(cur.path), "how": how,
                "written": cur.counters["written"]}


def cmd_daemon(args: Any, warm: Callable[[Config], Any] | None = None) -> int:
    """peakstream daemon [CONFIG] [--listen] [--control] [--live] [--output]; `warm`
    loads the kernels before the data socket is bound."""
    config = Config.load(args.config)
    for group, key, value in (("source", "listen", args.listen),
                              ("control", "endpoint", args.control),
                              ("live", "endpoint", args.live),
                              ("output", "directory", args.output)):
        if value is not None:
            config.override(group, key, value)
    output = Path(config["output"]["directory"])
    unsafe = unsafe_directory(output, config["output"]["shared_directory"])
    if unsafe:
        print(f"peakstream daemon: {unsafe}", file=sys.stderr)
        return 2
    logfile = setup_logging(config, output)
    meanwhile = ("scans that start meanwhile are held" if config["source"]["kind"]
                 in HOLDING_KINDS else "before binding the data socket")

    def on_control(endpoint: str) -> None:
        print(f"peakstream daemon {__version__}: control on {endpoint} (status: warming); "
              f"loading kernels, {meanwhile}", file=sys.stderr, flush=True)

    stop_while_starting()
    try:
        daemon = Daemon(config, output, warm, on_control)
    except (OSError, ImportError, ValueError) as exc:  # endpoints, a source's own checks
        print(f"peakstream daemon: {exc}", file=sys.stderr)
        return 2
    except StoppedStarting as exc:  # nothing was taken yet
        log.info("peakstream daemon stopped (%s) before it ran: during the warm-up or "
                 "while its source opened", exc)
        return 0
    signal.signal(signal.SIGTERM, daemon.stop)
    signal.signal(signal.SIGINT, daemon.stop)
    daemon.runner.freeze_gc = True  # a process of its own: see freeze_long_lived
    warn_open_files(output, config)
    ep = daemon.endpoints()
    print(f"peakstream daemon {__version__}: listening on {ep['data'] or '-'}, control on "
          f"{ep['control'] or '-'}, live on {ep['live'] or '-'}, writing to {output}, "
          f"log {logfile or '-'}", file=sys.stderr, flush=True)
    if getattr(daemon.source, "reading", ""):  # Bliss: the session followed
        print(f"peakstream daemon: {daemon.source.reading}", file=sys.stderr, flush=True)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the scans are refused until it can be made
        log.error("output directory %s cannot be made now: %s", output, exc)
    return daemon.run()
