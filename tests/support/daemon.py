"""Shared by the daemon, control, live and soak tests: `peakstream daemon` as a real
subprocess on ephemeral ports, a sender that can pause between points, and waits."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import zmq

from stream.config.schema import dump_toml
from stream.service.control import PRIVILEGED, read_token, request
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import encode
from tests.support.paths import CONFIGS, ROOT

SIMCONF = SimConfig(npoints=60, shape=(128, 160), spots=24, seed=3)
# for an in-process Daemon: its data and control sockets on ephemeral ports, no live lane
IN_PROCESS = """
[source]
listen = "tcp://127.0.0.1:0"
[control]
endpoint = "tcp://127.0.0.1:0"
[live]
endpoint = ""
"""
READY = re.compile(r"listening on (\S+), control on (\S+), live on (\S+), writing to (.+), "
                   r"log (\S+)")


def daemon_config(tmp_path: Path, extra: str = "", name: str = "daemon.toml",
                  base: Path = CONFIGS / "simulated.toml") -> Path:
    """configs/simulated.toml with the keys of `extra` (TOML groups, e.g. [workers])."""
    data = tomllib.loads(base.read_text())
    for group, table in tomllib.loads(extra).items():
        data[group] = {**data.get(group, {}), **table} if isinstance(table, dict) else table
    path = tmp_path / name
    path.write_text(dump_toml(data))
    return path


class DaemonProcess:
    """`peakstream daemon` in a subprocess; stderr goes to a file (never a full pipe)."""

    def __init__(self, config: Path, output: Path, *args: str, live: bool = True,
                 fsize: int = 0):
        self.log = output.parent / f"daemon-{time.monotonic_ns()}.stderr"
        self.stderr = open(self.log, "w")  # noqa: SIM115 (closed in finish)
        cmd = [sys.executable, "-m", "stream.cli", "daemon", str(config), "--listen",
               "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0", "--output", str(output),
               "--live", "tcp://127.0.0.1:0" if live else "", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     cwd=ROOT, preexec_fn=_file_size_limit(fsize))
        self.output = output
        deadline = time.monotonic() + 300  # an event: only a daemon that never starts waits it out
        while time.monotonic() < deadline:
            m = READY.search(self.log.read_text())
            if m:
                self.endpoint, self.control, self.live = m.group(1), m.group(2), m.group(3)
                self.logfile = m.group(5)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"peakstream daemon did not start:\n{self.log.read_text()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """A control request; set / checkpoint / stop carry the daemon's token."""
        if req.get("cmd") in PRIVILEGED and "token" not in req:
            req = {**req, "token": self.token()}
        return request(self.control, req, timeout=timeout)

    def token(self) -> str:
        """The control token, from the file the daemon's status names."""
        return read_token(request(self.control, {"cmd": "status"})["token_file"])

    def status(self) -> dict[str, Any]:
        return self.ask({"cmd": "status"})

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"peakstream daemon did not exit:\n{self.text()}") from None

    def text(self) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def _file_size_limit(nbytes: int):
    """A child-process hook: files may not grow past `nbytes` (a full disk, as the daemon
    sees it: writes fail with EFBIG); SIGXFSZ ignored so the write fails, not the process."""
    if not nbytes:
        return None

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


class Sender:
    """A PUSH to the daemon's data endpoint: start, points (pausing where asked), end."""

    def __init__(self, endpoint: str, sim: Simulation | None = None):
        self.sim = sim or Simulation(SIMCONF)
        self.sock = zmq.Context.instance().socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 10_000)
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        self.sock.connect(endpoint)

    def start(self, scan_id: str, **meta: Any) -> None:
        start = self.sim.start(scan_id)
        if meta:
            start = dataclasses.replace(start, meta={**start.meta, **meta})
        self.sock.send_multipart(encode(start), copy=False)

    def points(self, scan_id: str, ids, rate: float | None = None) -> None:
        for i in ids:
            self.sock.send_multipart(encode(self.sim.point(i, scan_id)), copy=False)
            if rate:
                time.sleep(1.0 / rate)

    def end(self, scan_id: str) -> None:
        self.sock.send_multipart(encode(self.sim.end(scan_id)), copy=False)

    def scan(self, scan_id: str, rate: float | None = None, **meta: Any) -> None:
        self.start(scan_id, **meta)
        self.points(scan_id, range(self.sim.config.npoints), rate)
        self.end(scan_id)

    def close(self) -> None:
        self.sock.close()


def wait_until(what: Callable[[], Any], limit: float = 300.0, every: float = 0.05,
               why: str = "") -> Any:
    """Poll `what()` until it is true; its value."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting: {why or what}")


def file_status(path: Path) -> str | None:
    """The output file's status, or None while it is missing or cannot be read."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return str(f["entry"].attrs["status"])
    except (OSError, KeyError):
        return None


def completed(path: Path, limit: float = 300.0) -> str:
    """Wait until the file has a final status; return it."""
    return wait_until(lambda: (file_status(path) or "running") != "running" and
                      file_status(path), limit, 0.1, f"{path} to be completed")


def scans_done(d: DaemonProcess, n: int, limit: float = 300.0) -> dict[str, Any]:
    """Wait until the daemon has ended `n` scans; its status then."""
    return wait_until(lambda: (s := d.status())["scans_done"] >= n and s, limit, 0.1,
                      f"{n} scan(s) to end")
