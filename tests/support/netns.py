"""Two network namespaces joined by a veth pair: a processor host and a worker host on
one machine, with addresses from the benchmarking range 198.18.0.0/15 (RFC 2544) that
exist only inside the namespaces made here. Needs root and iproute2 (`ip`); if they
cannot be made, the test fails with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PROCESSOR_IP, WORKER_IP = "198.18.0.1", "198.18.0.2"


@dataclass
class Hosts:
    processor: str  # namespace names
    worker: str
    processor_ip: str = PROCESSOR_IP
    worker_ip: str = WORKER_IP

    def popen(self, ns: str, args: list[str], log: Path) -> subprocess.Popen:
        """`python -m stream.cli ARGS` in namespace `ns` (ip netns exec execs it: the
        Popen's pid is the Python process's), stdout and stderr to `log`."""
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "stream.cli", *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log, "w") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=env)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def make_hosts(tag: str) -> Hosts:
    """Namespaces ps<tag>p and ps<tag>w, veth ps<tag>p0 <-> ps<tag>w0, both up."""
    if shutil.which("ip") is None:
        raise RuntimeError("no `ip` command: install iproute2 (apt-get install iproute2)")
    hosts = Hosts(f"ps{tag}p", f"ps{tag}w")
    for ns in (hosts.processor, hosts.worker):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # a stale one
        _ip("netns", "add", ns)
    _ip("link", "add", f"ps{tag}p0", "netns", hosts.processor, "type", "veth", "peer",
        "name", f"ps{tag}w0", "netns", hosts.worker)
    for ns, dev, ip in ((hosts.processor, f"ps{tag}p0", hosts.processor_ip),
                        (hosts.worker, f"ps{tag}w0", hosts.worker_ip)):
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    return hosts


def remove_hosts(hosts: Hosts) -> None:
    for ns in (hosts.processor, hosts.worker):  # the veth pair goes with them
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def hosts():
    tag = f"{os.getpid() % 100000}"
    try:
        made = make_hosts(tag)
    except (RuntimeError, OSError) as exc:
        remove_hosts(Hosts(f"ps{tag}p", f"ps{tag}w"))
        pytest.fail(f"cannot make the network namespaces for the processor and worker "
                    f"hosts (root and iproute2 needed): {exc}")
    yield made
    remove_hosts(made)
