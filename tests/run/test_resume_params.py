"""A live `set` survives a crash: the resumed scan goes on with the parameters in force
at its checkpoint (the file's param events), and says so."""

from __future__ import annotations

import json

import numpy as np

from stream.config.schema import Config
from stream.run.loop import drain
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS

SET_AT, KILLED_AT = 10, 30  # cut 200 from point 10; the process dies after point 29


def config() -> Config:
    cfg = Config.load(CONFIGS / "simulated.toml")
    cfg.override("workers", "kind", "inline")
    return cfg


def send(runner: ScanRunner, sim: Simulation, scan_id: str, points: range,
         set_at: int | None = None, start: bool = True, end: bool = False) -> None:
    """The scan's start, `points` (cut 200 set before point `set_at`), its end."""
    if start:
        runner.handle(encode(sim.start(scan_id)))
    for i in points:
        if i == set_at:
            runner.params.set("threshold", "cut", 200.0)  # the control socket's `set`
        runner.handle(encode(sim.point(i, scan_id)))
    if end:
        runner.handle(encode(sim.end(scan_id, sim.config.npoints)))


def killed(runner: ScanRunner) -> None:
    """The runner's process dies after a checkpoint: its file as checkpointed."""
    drain(runner)
    runner.current.collector.checkpoint()  # with the resume state
    runner.current.collector.store.close_unchanged()
    runner.current = None
    runner.close()


def test_a_resumed_scan_goes_on_with_the_parameters_set_before_the_crash(tmp_path, caplog):
    sim, n = Simulation(SIMCONF), SIMCONF.npoints
    out = tmp_path / "out"
    runner = ScanRunner(config(), output_dir=out)
    send(runner, sim, "setcrash", range(KILLED_AT), SET_AT)
    killed(runner)
    # a new process (the config's cut, 40) takes the rest of the scan
    runner = ScanRunner(config(), output_dir=out)
    send(runner, sim, "setcrash", range(KILLED_AT, n), start=False, end=True)
    assert runner.params.get("threshold", "cut") == {"cut": 200.0}
    runner.close()
    assert runner.results[0]["status"] == "success"
    assert "threshold.cut = 200.0, in force at its checkpoint" in caplog.text
    got = load(out / "setcrash.h5")
    events = [(k, int(p), json.loads(m)) for k, p, m in zip(
        got["events"]["kind"], got["events"]["point_id"], got["events"]["message"],
        strict=True) if k == "param"]
    assert [(p, e["value"]) for _, p, e in events] == [(SET_AT, 200.0), (KILLED_AT, 200.0)]
    # every point from the set on is processed with cut 200: as a run with it from there
    runner = ScanRunner(config(), output_file=tmp_path / "ref.h5")
    send(runner, sim, "setcrash", range(n), SET_AT, end=True)
    runner.close()
    ref = load(tmp_path / "ref.h5")
    for col in ("point_id", "npx", "sum_intensity", "s_raw", "f_raw"):
        assert np.array_equal(got["peaks2d"][col], ref["peaks2d"][col]), col


def test_a_scan_started_after_a_set_is_resumed_by_the_config_as_given(tmp_path, caplog):
    """Its file's config holds the value set (cut 200), so its processing is not the
    config file's: the restarted process, given the config file (cut 40), still
    continues it (the file records the config as given) and sets cut 200 again."""
    sim, n = Simulation(SIMCONF), SIMCONF.npoints
    out = tmp_path / "out"
    runner = ScanRunner(config(), output_dir=out)
    runner.params.set("threshold", "cut", 200.0)  # before the scan: in force from point 0
    send(runner, sim, "afterset", range(KILLED_AT))
    killed(runner)
    runner = ScanRunner(config(), output_dir=out)  # given the config file: cut 40
    send(runner, sim, "afterset", range(KILLED_AT, n), start=False, end=True)
    runner.close()
    assert [r["file"] for r in runner.results] == [str(out / "afterset.h5")]  # resumed
    assert runner.results[0]["status"] == "success"
    assert "threshold.cut = 200.0, in force at its checkpoint" in caplog.text
    got = load(out / "afterset.h5")
    runner = ScanRunner(config(), output_file=tmp_path / "ref.h5")  # cut 200 throughout
    send(runner, sim, "afterset", range(n), 0, end=True)
    runner.close()
    ref = load(tmp_path / "ref.h5")
    for col in ("point_id", "npx", "sum_intensity", "s_raw", "f_raw"):
        assert np.array_equal(got["peaks2d"][col], ref["peaks2d"][col]), col
