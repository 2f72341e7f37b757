"""Live workers on another host: CurveZMQ over TCP, a worker host of its own (a network
namespace), a remote worker killed mid-scan loses nothing, and reachable endpoints
without keys are refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from stream.cli.main import main
from stream.config.base import ConfigError
from stream.config.schema import Config
from stream.core.messages import End
from stream.run.curve import make_keys, need_keys, secure_client
from stream.run.dispatch import Dispatcher
from stream.run.runner import ScanRunner
from stream.run.workers import serve
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import encode
from stream.wire.sockets import is_loopback
from tests.support.daemon import wait_until
from tests.support.flow import assert_same_tables, tables
from tests.support.netns import hosts  # noqa: F401  (the fixture)
from tests.support.paths import CONFIGS, ROOT
from tests.support.ports import free_port

SIM = SimConfig(npoints=240, shape=(128, 160), spots=20, seed=5)


def inline_reference(path: Path, scan_id: str) -> dict:
    sim = Simulation(SIM)
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=path)
    runner.handle(encode(sim.start(scan_id)))
    for i in range(SIM.npoints):
        runner.handle(encode(sim.point(i, scan_id)))
    runner.handle(encode(End(scan_id, "success", SIM.npoints)))
    runner.close()
    return tables(path)


def remote_config(tmp_path: Path, endpoint: str, keys: Path | None) -> Path:
    path = tmp_path / "remote.toml"
    path.write_text((CONFIGS / "simulated.toml").read_text()
                    + f'\n[workers]\nkind = "processes"\ncount = 1\nendpoint = "{endpoint}"\n'
                    + ("" if keys is None else f'keys = "{keys}"\n')
                    + "heartbeat_timeout = 2.0\n")
    return path


def points_done(log: Path) -> int:
    found = re.findall(r"worker: (\d+) points", log.read_text())
    return int(found[-1]) if found else 0


@pytest.mark.system
def test_a_remote_worker_killed_mid_scan_loses_no_point(tmp_path, hosts):  # noqa: F811
    keys = tmp_path / "keys"
    make_keys(keys)
    endpoint = f"tcp://{hosts.processor_ip}:7100"
    config = remote_config(tmp_path, endpoint, keys)
    out = tmp_path / "out"
    run = hosts.popen(hosts.processor, ["run", str(config), "--listen", "tcp://127.0.0.1:5555",
                                        "--output", str(out), "--scans", "1"],
                      tmp_path / "run.log")
    worker_log = tmp_path / "worker.log"
    worker = hosts.popen(hosts.worker, ["worker", "--connect", endpoint, "--keys", str(keys),
                                        "--progress-interval", "0.2"], worker_log)
    sender = None
    try:
        wait_until(lambda: f"from {hosts.worker_ip} joined" in (tmp_path / "run.log")
                   .read_text() or run.poll() is not None, 300)
        assert run.poll() is None, (tmp_path / "run.log").read_text()
        sender = hosts.popen(hosts.processor, [
            "simulate", "--quiet", "--send", "tcp://127.0.0.1:5555", "--points",
            str(SIM.npoints), "--shape", *map(str, SIM.shape), "--spots", str(SIM.spots),
            "--seed", str(SIM.seed), "--scan-id", "netns", "--rate", "30",
            "--encoding", "bslz4"], tmp_path / "sender.log")
        wait_until(lambda: points_done(worker_log) >= 10 or worker.poll() is not None, 600)
        worker.kill()  # SIGKILL on the worker host, mid-scan
        worker.wait()
        done_remote = points_done(worker_log)
        assert sender.wait(600) == 0, (tmp_path / "sender.log").read_text()
        assert run.wait(600) == 0, (tmp_path / "run.log").read_text()
    finally:
        for p in (run, worker, sender):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    text = (tmp_path / "run.log").read_text()
    assert re.search(rf"worker pid \d+ at {re.escape(hosts.worker_ip)} lost", text), text
    assert 10 <= done_remote < SIM.npoints
    got = tables(out / "netns.h5")
    assert len(got["points"]["point_id"]) == SIM.npoints
    assert (got["points"]["status"] == 0).all()  # every point ok: none missing, none bad
    assert_same_tables(inline_reference(tmp_path / "inline.h5", "netns"), got)


def test_reachable_endpoints_need_keys(tmp_path, capsys):
    assert is_loopback("tcp://127.0.0.1:7100") and is_loopback("tcp://[::1]:7100")
    assert is_loopback("ipc:///tmp/x") and is_loopback("tcp://localhost:1")
    assert not is_loopback("tcp://0.0.0.0:7100") and not is_loopback("tcp://*:7100")
    assert not is_loopback("tcp://10.0.0.1:7100") and not is_loopback("tcp://host:7100")
    with pytest.raises(ValueError, match="CurveZMQ"):
        need_keys("tcp://0.0.0.0:7100", None)
    with pytest.raises(ConfigError, match="keys"):
        Config.load(remote_config(tmp_path, "tcp://0.0.0.0:0", None))
    with pytest.raises(ValueError, match="CurveZMQ"):
        Dispatcher(Config.load(CONFIGS / "simulated.toml"), "processes", 1, "tcp://*:0")
    assert main(["run", str(remote_config(tmp_path, "tcp://0.0.0.0:0", None)),
                 "--listen", "tcp://127.0.0.1:0"]) == 2
    assert main(["worker", "--connect", "tcp://192.0.2.1:7100"]) == 2
    assert "needs CurveZMQ keys" in capsys.readouterr().err
    keys = tmp_path / "keys"
    assert main(["keys", str(keys)]) == 0
    assert sorted(p.name for p in keys.iterdir()) == ["server.key", "server.key_secret",
                                                      "worker.key", "worker.key_secret"]
    assert (keys / "worker.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", str(keys)]) == 2  # never overwrites a pair
    assert main(["keys", str(keys), "--name", "beamline2"]) == 0
    assert (keys / "beamline2.key").exists()


def test_only_workers_with_an_admitted_key_get_through(tmp_path):
    """A CURVE client whose key is not in the directory never reaches the ROUTER; one
    whose key is, does."""
    keys, other = tmp_path / "keys", tmp_path / "other"
    make_keys(keys)
    make_keys(other, "stranger")
    (other / "server.key").unlink()
    (other / "server.key").write_bytes((keys / "server.key").read_bytes())
    d = Dispatcher(Config.load(CONFIGS / "simulated.toml"), "threads", 1,
                   "tcp://127.0.0.1:0", keys=str(keys))
    ctx = zmq.Context.instance()
    try:
        wait_until(lambda: d.collect(0.05) == [] and d.status()["workers"] == 1, 120)
        for directory, name, admitted in ((other, "stranger", False), (keys, "worker", True)):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            secure_client(s, directory, name)
            mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                       | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            s.connect(d.endpoint)
            event = recv_monitor_message(mon)["event"]
            assert (event == zmq.EVENT_HANDSHAKE_SUCCEEDED) is admitted, (name, event)
            s.disable_monitor()
            mon.close(linger=0)
            s.close(linger=0)
    finally:
        d.close()


def test_keys_are_checked_before_the_worker_starts(tmp_path):
    assert main(["worker", "--connect", "tcp://192.0.2.1:7100", "--keys",
                 str(tmp_path / "none")]) == 2


@pytest.mark.system
def test_a_cold_worker_compiles_before_it_takes_points(tmp_path):
    """A worker host with an empty numba cache (a new install) warms the processor's
    config up, with its line, before it says it is ready: its first point comes after
    the kernels are ready, and the scan is the inline run's."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = remote_config(tmp_path, endpoint, None)
    out, run_log, worker_log = tmp_path / "out", tmp_path / "run.log", tmp_path / "worker.log"
    cold = tmp_path / "numba-cache"
    cold.mkdir()

    def popen(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        with open(log, "w") as f:
            return subprocess.Popen([sys.executable, "-m", "stream.cli", *args], cwd=ROOT,
                                    stdout=f, stderr=subprocess.STDOUT, env=env)

    run = popen(["-v", "run", str(config), "--listen", "tcp://127.0.0.1:0", "--output",
                 str(out), "--scans", "1"], run_log)
    worker = sender = None
    try:
        wait_until(lambda: "listening on" in run_log.read_text() or run.poll() is not None,
                   600)
        assert run.poll() is None, run_log.read_text()
        listen = re.search(r"listening on (tcp://[0-9.:]+)", run_log.read_text()).group(1)
        worker = popen(["worker", "--connect", endpoint, "--progress-interval", "0.2"],
                       worker_log, {**os.environ, "NUMBA_CACHE_DIR": str(cold)})
        wait_until(lambda: f"worker pid {worker.pid} ready" in run_log.read_text()
                   or worker.poll() is not None, 1800)  # with the fix, after its warm-up
        sender = popen(["simulate", "--quiet", "--send", listen, "--points", str(SIM.npoints),
                        "--shape", *map(str, SIM.shape), "--spots", str(SIM.spots), "--seed",
                        str(SIM.seed), "--scan-id", "cold", "--rate", "60"],
                       tmp_path / "sender.log")
        assert sender.wait(600) == 0, (tmp_path / "sender.log").read_text()
        assert run.wait(600) == 0, run_log.read_text()
        worker.wait(120)
    finally:
        for p in (run, worker, sender):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    text = worker_log.read_text()
    assert re.search(r"worker: \d+ kernels ready in [\d.]+ s \(\d+ compiled", text), text
    first = re.search(r"worker: [1-9]\d* points", text)
    assert first is not None and text.index("kernels ready") < first.start(), text
    assert_same_tables(inline_reference(tmp_path / "inline.h5", "cold"), tables(out / "cold.h5"))


def test_a_worker_pair_made_with_a_name_is_used_with_that_name(tmp_path, capsys):
    """`peakstream keys DIR --name hutch2` says to copy server.key and the hutch2 pair;
    a worker given that directory without --name is refused at start-up naming the
    file it lacks, and with --name hutch2 it joins."""
    import threading

    keys, copied = tmp_path / "keys", tmp_path / "hutch2keys"
    assert main(["keys", str(keys)]) == 0  # as docs/cluster.md: the processor's own
    assert main(["keys", str(keys), "--name", "hutch2"]) == 0
    copied.mkdir()
    for name in ("server.key", "hutch2.key", "hutch2.key_secret"):
        (copied / name).write_bytes((keys / name).read_bytes())
    d = Dispatcher(Config.load(CONFIGS / "simulated.toml"), "threads", 1,
                   "tcp://127.0.0.1:0", keys=str(keys))
    try:
        capsys.readouterr()
        assert main(["worker", "--connect", d.endpoint, "--keys", str(copied)]) == 2
        assert f"{copied / 'worker.key_secret'}: no such key file" in capsys.readouterr().err
        codes = []
        worker = threading.Thread(target=lambda: codes.append(main([
            "worker", "--connect", d.endpoint, "--keys", str(copied), "--name", "hutch2",
            "--quiet"])))
        worker.start()
        wait_until(lambda: d.collect(0.05) == [] and d.status()["workers"] == 2, 300)
    finally:
        d.close()  # says stop to the workers
    worker.join()
    assert codes == [0]


def test_a_worker_whose_io_thread_fails_ends_with_the_reason(tmp_path):
    """The key pair is loaded in the worker's I/O thread: when that fails, the chain
    thread ends with the reason instead of waiting for tasks for ever."""
    keys = tmp_path / "keys"
    make_keys(keys)
    (keys / "worker.key_secret").unlink()
    with pytest.raises(RuntimeError, match="worker.key_secret: no such key file"):
        serve("tcp://127.0.0.1:9", keys=str(keys), orphan=1e9)


def test_a_refused_worker_is_named_on_both_sides_and_stops_after_orphan(tmp_path, caplog):
    """A worker pair the processor does not know: the processor logs the refused key at
    WARNING, and the worker (whose hello can never be sent) stops after --orphan s
    saying the processor never answered, instead of blocking in its send."""
    import logging

    import zmq.auth

    keys, other = tmp_path / "keys", tmp_path / "other"
    make_keys(keys)
    make_keys(other, "stranger")
    (other / "server.key").unlink()
    (other / "server.key").write_bytes((keys / "server.key").read_bytes())
    stranger = zmq.auth.load_certificate(other / "stranger.key")[0].decode()
    d = Dispatcher(Config.load(CONFIGS / "simulated.toml"), "threads", 1,
                   "tcp://127.0.0.1:0", keys=str(keys))
    try:
        with caplog.at_level(logging.WARNING, logger="stream.run.curve"):
            with pytest.raises(RuntimeError, match="never answered in 1 s"):
                serve(d.endpoint, keys=str(other), name="stranger", orphan=1.0)
    finally:
        d.close()
    refused = [r.getMessage() for r in caplog.records if "refused a worker" in r.getMessage()]
    assert len(refused) == 1 and stranger in refused[0], refused  # once, however many tries
    assert main(["worker", "--connect", f"tcp://127.0.0.1:{free_port()}", "--orphan", "1",
                 "--quiet"]) == 1  # nothing there at all: the same end


def test_a_worker_of_another_version_is_refused_on_both_sides(tmp_path, caplog):
    """The processor refuses a hello of another peakstream version (or none: an older
    worker), with a WARNING naming both, and answers why; a worker so refused exits 2
    with the reason. Both sides are real sockets; the other side's messages are made
    by hand as the other version would send them."""
    import logging
    import threading

    from stream import __version__
    from stream.run.build import build_id
    from stream.run.tasks import header_of, pack

    ctx = zmq.Context.instance()
    d = Dispatcher(Config.load(CONFIGS / "simulated.toml"), "threads", 1, "tcp://127.0.0.1:0")
    try:
        wait_until(lambda: d.collect(0.05) == [] and d.status()["workers"] == 1, 120)
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(d.endpoint)
        with caplog.at_level(logging.WARNING, logger="stream.run.dispatch"):
            for hello in ({"pid": 7, "thread": 1, "parent": 0, "version": "0.0.9"},
                          {"pid": 7, "thread": 1, "parent": 0},  # before the check
                          {"pid": 7, "thread": 1, "parent": 0, "version": __version__,
                           "build": "0" * 12},  # the same version, another build
                          {"pid": 7, "thread": 1, "parent": 0, "version": __version__}):
                s.send(pack({"type": "hello", **hello}))
                wait_until(lambda: d.collect(0.05) == [] and s.poll(0), 120)
                answer = header_of(s.recv_multipart())
                assert answer["type"] == "refused", answer
                assert d.status()["workers"] == 1  # not joined
        s.close(linger=0)
    finally:
        d.close()
    warned = [r.getMessage() for r in caplog.records if "refused worker" in r.getMessage()]
    assert len(warned) == 4 and "0.0.9" in warned[0] and __version__ in warned[0], warned
    assert f"(build {build_id()}), this worker {__version__} (build 000000000000)" in warned[2]

    router = ctx.socket(zmq.ROUTER)  # a processor of another version
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    codes = []
    worker = threading.Thread(target=lambda: codes.append(main([
        "worker", "--connect", f"tcp://127.0.0.1:{port}", "--quiet"])))
    worker.start()
    identity, hello = router.recv_multipart()
    assert (header_of([hello])["version"], header_of([hello])["build"]) == (__version__,
                                                                             build_id())
    router.send_multipart([identity, pack({"type": "refused", "reason": "refused: 9.9"})])
    worker.join()
    router.close()
    assert codes == [2]
