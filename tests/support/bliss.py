"""A helper that acts as Bliss: it publishes scans through blissdata's own writer API
(scan info, one stream per axis and counter, a Lima stream whose frames it saves in
HDF5 files as it goes, Lima's layout), for the blissdata source's tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

DATA_PATH = "/entry_0000/measurement/data"


class FakeBliss:
    """Publishes scans on `url`, frames saved below `directory`."""

    def __init__(self, url: str, directory: Path, session: str = "demo"):
        from blissdata.redis_engine.store import DataStore

        self.store = DataStore(url)
        self.directory, self.session = directory, session

    def scan(self, name: str, number: int, frames: list[np.ndarray],
             axes: dict[str, list[float]], counters: dict[str, list[float]] | None = None,
             info: dict[str, Any] | None = None, frames_per_file: int = 4,
             abort_after: int | None = None, late_files: dict[int, float] | None = None,
             lima: bool = True, npoints: int | None = -1, batch: int = 1,
             pause_at: int | None = None, pause: float = 0.0,
             published: Callable[[int], None] | None = None,
             timers: dict[str, list[float]] | None = None) -> None:
        """One scan: channels "axis:<name>" and "<ctrl>:<name>", the Lima stream
        "eiger:image". `abort_after`: stop after that many points as a user abort;
        `late_files`: file number -> seconds it reaches the disk after Bliss says it is
        saved (inf: never); `lima` False: the frames travel in the stream itself;
        `npoints` None: an open-ended scan (-1: len(frames)); `batch`: points per
        publication (Bliss buffers; Lima publishes its status now and then); `pause_at`:
        Bliss publishes nothing for `pause` s before that point (a refill, a user pause);
        `published(n)`: called before each publication but the first, n points out (it
        may block: a scan that pauses there); `timers`: channels "timer:<name>" (Bliss's
        timer master publishes `epoch` and `elapsed_time`, s)."""
        from blissdata.streams.default import Stream
        from blissdata.streams.lima.stream import LimaStream

        counters = counters or {}
        axes = {**axes, **{f"timer:{k}": v for k, v in (timers or {}).items()}}
        n = len(frames)
        info = {"type": "fscan", "title": name, **(info or {})}
        if npoints is not None:
            info["npoints"] = n if npoints == -1 else npoints
        scan = self.store.create_scan({"name": name, "number": number,
                                       "data_policy": "no_policy", "session": self.session},
                                      info=info)
        shape, dtype = frames[0].shape, frames[0].dtype
        prefix = self.directory / f"{self.session}_{number}_eiger_"
        if lima:
            image = scan.create_stream(LimaStream.make_definition(
                "eiger:image", dtype, shape, "id11/limaccds/eiger", 16, n, 0,
                saving={"file_path": f"{prefix}%04d.h5", "data_path": DATA_PATH,
                        "file_format": "hdf5", "file_offset": 0,
                        "frames_per_file": frames_per_file}))
        else:
            image = scan.create_stream(Stream.make_definition("eiger:image", dtype, shape))
        streams = {channel(k): scan.create_stream(Stream.make_definition(channel(k), "float64"))
                   for k in axes}
        streams.update({f"ctrl:{k}": scan.create_stream(
            Stream.make_definition(f"ctrl:{k}", "float64")) for k in counters})
        scan.prepare()
        scan.start()
        stop = n if abort_after is None else abort_after
        late: list[threading.Thread] = []
        saved = -1  # the last frame in a file Lima has written (or says it has)
        for lo in range(0, stop, batch):
            if published is not None and lo:
                published(lo)
            hi = min(lo + batch, stop)
            if pause_at is not None and lo <= pause_at < hi:
                time.sleep(pause)
            for k, v in axes.items():
                streams[channel(k)].send(np.asarray(v[lo:hi], float))
            for k, v in counters.items():
                streams[f"ctrl:{k}"].send(np.asarray(v[lo:hi], float))
            if not lima:
                image.send(np.stack(frames[lo:hi]))
                continue
            for i in range(lo, hi):
                file_no, last = divmod(i, frames_per_file)
                if last == frames_per_file - 1 or i == stop - 1:
                    first = file_no * frames_per_file
                    stack = np.stack(frames[first:i + 1])
                    delay = (late_files or {}).get(file_no, 0.0)
                    path = Path(f"{prefix}{file_no:04d}.h5")
                    if not delay:
                        write_lima_file(path, stack)
                    elif delay != float("inf"):
                        t = threading.Timer(delay, write_lima_file, (path, stack))
                        t.start()
                        late.append(t)
                    saved = i
            image.send({"last_index": hi - 1, "last_index_saved": saved})
        for s in (image, *streams.values()):
            s.seal()
        scan.stop()
        scan.info["end_reason"] = "SUCCESS" if abort_after is None else "USER_ABORT"
        scan.close()
        for t in late:
            t.join()


def dying_scan(url: str, session: str, number: int, frames: list[np.ndarray],
               omega: list[float], info: dict[str, Any] | None = None) -> Any:
    """A scan ("fscan") whose Bliss dies once it has published `frames` (in the stream
    "eiger:image") and their `omega` ("axis:diffrz"): never sealed, never closed."""
    from blissdata.redis_engine.store import DataStore
    from blissdata.streams.default import Stream

    scan = DataStore(url).create_scan({"name": "fscan", "number": number,
                                       "data_policy": "no_policy", "session": session},
                                      info=info or {})
    image = scan.create_stream(Stream.make_definition("eiger:image", frames[0].dtype,
                                                      frames[0].shape))
    rot = scan.create_stream(Stream.make_definition("axis:diffrz", "float64"))
    scan.prepare()
    scan.start()
    image.send(np.stack(frames))
    rot.send(np.asarray(omega, float))
    return scan


def channel(name: str) -> str:
    """An axis's channel ("axis:diffrz"), or a channel given by its full name."""
    return name if ":" in name else f"axis:{name}"


def write_lima_file(path: Path, stack: np.ndarray) -> None:
    """A Lima HDF5 file: the frames at /entry_0000/measurement/data (written, closed)."""
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f[DATA_PATH] = stack
    tmp.rename(path)


def collect(source: Any, ends: int = 1, limit: float = 300.0) -> list[list]:
    """The source's messages until `ends` end messages came (or `limit` s: a safety net,
    the caller's asserts say what was missing)."""
    from stream.core.messages import End
    from stream.wire.codec import decode

    out: list[list] = []
    seen = 0
    deadline = time.monotonic() + limit
    while seen < ends and time.monotonic() < deadline:
        got = source.receive(0.1)
        out += got
        seen += sum(isinstance(decode(p), End) for p in got)
    return out


def lima_frames(directory: Path, pattern: str) -> np.ndarray:
    """Every frame Lima saved under `pattern` (a glob), read back with plain h5py."""
    files = sorted(directory.glob(pattern))
    assert files, f"no Lima files {pattern} in {directory}"
    stacks = []
    for path in files:
        with h5py.File(path, "r") as f:
            stacks.append(f[DATA_PATH][()])
    return np.concatenate(stacks)


def replay_files(tmp: Path, frames: np.ndarray, motors: dict[str, list[float]],
                 counters: dict[str, list[float]], trajectory: dict, name: str = "replay"
                 ) -> dict:
    """The frames as one HDF5 stack with their motors, replayed (open_recording) through
    an in-process runner with configs/simulated.toml; the output's tables."""
    from stream.config.schema import Config
    from stream.core.messages import End
    from stream.run.runner import ScanRunner
    from stream.sources.files import open_recording
    from stream.wire.codec import encode
    from tests.support.flow import tables
    from tests.support.paths import CONFIGS

    h5 = tmp / f"{name}-stack.h5"
    with h5py.File(h5, "w") as f:
        f["/1.1/measurement/eiger"] = frames
        for k, v in {**motors, **counters}.items():
            f[f"/1.1/measurement/{k}"] = np.asarray(v, float)[:len(frames)]
    spec = lambda k: f"{h5}::/1.1/measurement/{k}"  # noqa: E731
    start, points = open_recording(
        [], images=[f"{h5}::/1.1/measurement/eiger"], motors={k: spec(k) for k in motors},
        counters={k: spec(k) for k in counters}, trajectory=trajectory, scan_id=name)
    out = tmp / f"{name}.h5"
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=out)
    runner.handle(encode(start))
    for p in points:
        runner.handle(encode(p))
    runner.handle(encode(End(name, "success", len(frames))))
    runner.close()
    assert runner.results[0]["status"] == "success", runner.results
    return tables(out)


def bliss_config(tmp: Path, url: str, session: str, extra: str = "") -> Path:
    """A daemon config (configs/simulated.toml) following `session`'s Bliss scans on
    `url` (omega = axis:diffrz, monitor), one file per scan named after it."""
    from tests.support.daemon import daemon_config

    return daemon_config(tmp, f"""
[source]
kind = "blissdata"
redis_url = "{url}"
session = "{session}"
motors = ["omega"]
counters = ["monitor"]
channels = {{ omega = "axis:diffrz" }}
[output]
pattern = "{{scan_id}}.h5"
{extra}""")


def follow(runner: Any, source: Any, scans: int = 1) -> list[dict]:
    """Steps `runner` (its receive loop) on a live `source` until `scans` scans ended: the
    runner's results (a count-bounded safety net; the caller's asserts say what was
    missing)."""
    for _ in range(4000):  # 200 s idle
        runner.step(source, timeout=0.05)
        if len(runner.results) >= scans:
            break
    return runner.results


def run_messages(tmp: Path, messages: list[list], name: str = "live") -> list[dict]:
    """Our messages through an in-process runner (configs/simulated.toml): the result of
    each scan, with its tables."""
    from stream.config.schema import Config
    from stream.run.runner import ScanRunner
    from tests.support.flow import tables
    from tests.support.paths import CONFIGS

    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_dir=tmp / name)
    for parts in messages:
        runner.handle(parts)
    runner.close()
    return [{**r, "tables": tables(r["file"])} for r in runner.results]
